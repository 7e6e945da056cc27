"""`/ws/notifications/`: one user's inbox, live.

Delivery is exact per socket. `live_from` is the newest id when the socket
joined its user group (the `welcome` frame's `last_id`); every id above it
reaches the socket live, and `cursor` is the highest id delivered so far, so
(live_from, cursor] is exactly what went out live. Each live event carries
the previous id of that inbox: when it is above `cursor`, an earlier event is
still in flight or was lost, and the socket reads the missing ones from the
database instead of waiting. A `resume` replays from the database and skips
(live_from, cursor], so nothing is sent twice.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from notifications import selectors, services
from notifications.serializers import notification_dict
from realtime import db
from realtime.consumers import RealtimeConsumer
from realtime.protocol import (
    NOTIFICATION_FRAMES,
    ErrorCode,
    FrameError,
    MarkAllRead,
    MarkRead,
    Resume,
    ServerFrame,
    user_group,
)

# The database is reached only through these, each wrapped once, in the lane of
# its kind (realtime.db).
inbox_state = db.handshake(selectors.inbox_state)
notifications_after = db.frames(selectors.notifications_after)
mark_read = db.frames(services.mark_read)
mark_all_read = db.frames(services.mark_all_read)


def _notification_frame(event: dict[str, Any]) -> dict[str, Any]:
    return {"type": ServerFrame.NOTIFICATION, "notification": event["notification"]}


class NotificationConsumer(RealtimeConsumer):
    frames = NOTIFICATION_FRAMES
    endpoint = "notifications"

    async def authenticated(self) -> None:
        # Join before reading the state, so nothing committed in between is missed.
        await self.join(user_group(self.user.pk))
        state = await inbox_state(user=self.user)
        self.live_from = self.cursor = state.last_id or 0
        await self.send_frame(
            {
                "type": ServerFrame.WELCOME,
                "user": {"id": self.user.pk, "username": self.user.get_username()},
                "unread": state.unread,
                "last_id": state.last_id,
            }
        )

    # --- client frames ---------------------------------------------------------------
    async def frame_resume(self, frame: Resume) -> None:
        limit = settings.NOTIFICATIONS_REPLAY_LIMIT
        # Ids the client says it has count as delivered.
        self.cursor = max(self.cursor, frame.after) if frame.after > self.live_from else self.cursor
        rows = await notifications_after(
            user=self.user, after=frame.after, limit=limit + 1, skip=(self.live_from, self.cursor)
        )
        more = len(rows) > limit
        rows = rows[:limit]
        for row in rows:
            await self._deliver(row)
        if more:
            last_id = rows[-1].id
        else:
            last_id = max(frame.after, self.cursor) or None
        await self.send_frame({"type": ServerFrame.REPLAY_DONE, "last_id": last_id, "more": more})

    async def frame_mark_read(self, frame: MarkRead) -> None:
        try:
            await mark_read(user=self.user, ids=frame.ids)
        except ValidationError as exc:
            raise FrameError(ErrorCode.TOO_LARGE, "; ".join(exc.messages), ref=frame.ref) from None

    async def frame_mark_all_read(self, frame: MarkAllRead) -> None:
        await mark_all_read(user=self.user)

    # --- channel-layer events ------------------------------------------------------------
    def quick_push_notification(self, event: dict[str, Any]) -> bool:
        return self.write_next(event, event["notification"]["id"], _notification_frame, "notification")

    async def push_notification(self, event: dict[str, Any]) -> None:
        notification = event["notification"]
        if notification["id"] <= self.cursor:
            return  # already delivered by a replay or a gap fill
        if (event.get("prev_id") or 0) > self.cursor:
            self.needs_io()
            await self._fill_gap(up_to=notification["id"])
            return
        self.cursor = notification["id"]
        await self.send_shared(event, _notification_frame, "notification")

    async def push_read(self, event: dict[str, Any]) -> None:
        await self.send_frame(
            {"type": ServerFrame.READ, "ids": event["ids"], "all": event["all"], "unread": event["unread"]}
        )

    # --- helpers ------------------------------------------------------------------------
    async def _fill_gap(self, *, up_to: int) -> None:
        limit = settings.NOTIFICATIONS_REPLAY_LIMIT
        while self.cursor < up_to:
            rows = await notifications_after(user=self.user, after=self.cursor, limit=limit, up_to=up_to)
            if not rows:
                break
            for row in rows:
                await self._deliver(row)

    async def _deliver(self, row) -> None:
        if self.live_from < row.id <= self.cursor:
            return  # went out live while this replay was reading
        self.cursor = max(self.cursor, row.id)
        await self.send_frame({"type": ServerFrame.NOTIFICATION, "notification": notification_dict(row)})
