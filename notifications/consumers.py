"""`/ws/notifications/`: one user's inbox, live.

Notifications reach each socket exactly once, in id order, as chat messages
do: realtime.streams holds the cursor, resume and gap fill; this module
supplies the inbox's selector and frames.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from django.core.exceptions import ValidationError

from notifications import selectors, services
from notifications.serializers import notification_dict
from realtime import db
from realtime.fanout.events import LocalEvent
from realtime.protocol import (
    NOTIFICATION_FRAMES,
    ErrorCode,
    FrameError,
    MarkAllRead,
    MarkRead,
    ServerFrame,
    user_group,
)
from realtime.streams import OrderedStreamConsumer, item_frame

# The database is reached only through these, each wrapped once, in the lane of
# its kind (realtime.db).
# Sockets arriving together read their states together (realtime.db.batched).
inbox_state = db.batched(selectors.inbox_states)
notifications_after = db.frames(selectors.notifications_after)
mark_read = db.frames(services.mark_read)
mark_all_read = db.frames(services.mark_all_read)


_notification_frame = item_frame(ServerFrame.NOTIFICATION)


class NotificationConsumer(OrderedStreamConsumer):
    frames = NOTIFICATION_FRAMES
    endpoint = "notifications"
    replay_limit_setting = "NOTIFICATIONS_REPLAY_LIMIT"

    async def authenticated(self) -> None:
        # Join before reading the state, so nothing committed in between is missed.
        await self.join(user_group(self.user.pk))
        state = await inbox_state(self.user.pk)
        self.start_stream(state.last_id)
        await self.send_frame(
            {
                "type": ServerFrame.WELCOME,
                "user": {"id": self.user.pk, "username": self.user.get_username()},
                "unread": state.unread,
                "last_id": state.last_id,
            }
        )

    # --- client frames ---------------------------------------------------------------
    async def frame_mark_read(self, frame: MarkRead) -> None:
        try:
            await mark_read(user=self.user, ids=frame.ids)
        except ValidationError as exc:
            raise FrameError(ErrorCode.TOO_LARGE, "; ".join(exc.messages), ref=frame.ref) from None

    async def frame_mark_all_read(self, frame: MarkAllRead) -> None:
        await mark_all_read(user=self.user)

    # --- the inbox as an ordered stream (realtime.streams) -------------------------------
    def row_frame(self, row) -> dict[str, Any]:
        return {"type": ServerFrame.NOTIFICATION, "notification": notification_dict(row)}

    async def read_items(self, **query: Any):
        return await notifications_after(user=self.user, **query)

    # --- channel-layer events (one handler each: see realtime.delivery) -----------------
    def push_notification(self, event: LocalEvent) -> Awaitable[None] | None:
        return self.push_item(event, event["notification"]["id"], _notification_frame, "notification")

    def push_read(self, event: LocalEvent) -> Awaitable[None]:
        return self.send_frame(
            {"type": ServerFrame.READ, "ids": event["ids"], "all": event["all"], "unread": event["unread"]}
        )
