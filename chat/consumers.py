"""`/ws/chat/<slug>/`: one chat room, live.

Delivery is exactly once per socket, as on `/ws/notifications/`: `live_from`
is the newest id of the room when the socket joined the room group, and every
later id reaches it live; `cursor` is the highest id delivered. Each live
`message` event carries the room's previous id: when that is above `cursor`,
an earlier push is late or lost, and the socket reads the gap from the
database in order. A `resume` replays from the database, skipping
(live_from, cursor], which went out live.

Losing access (a member removed from a private room, a room made private):
`access_version` is the room's Room.access_version under which this socket
was admitted. A `revoke` event naming this user with a newer version closes
the socket with 4403; every message push carries the version read under the
room's lock, and one newer than the socket's is shown only after the socket
has checked its membership in the database, so a message posted after a
removal never reaches the removed member, even when it overtakes the revoke.
Resumes and gap fills check membership on every read.

Presence (chat.presence) is shared by every worker; this socket enters it
after joining the room group and leaves it on close. Its worker refreshes it
and sends it the room's batched `presence` frames.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError

from chat import presence, ratelimit, selectors, services
from chat.serializers import message_dict, room_dict
from realtime import db
from realtime.consumers import CloseSocket, RealtimeConsumer
from realtime.fanout.push import publish
from realtime.protocol import (
    CHAT_FRAMES,
    ChatPost,
    CloseCode,
    ErrorCode,
    Event,
    FrameError,
    Resume,
    ServerFrame,
    Typing,
    room_group,
)

logger = logging.getLogger("chat.socket")

# The database is reached only through these, each wrapped once, in the lane
# of its kind (realtime.db): a join storm does not hold up the posts.
joinable_room = db.handshake(selectors.joinable_room)
room_state = db.handshake(selectors.room_state)
access_at_join = db.handshake(selectors.room_access)
room_access = db.frames(selectors.room_access)
readable_messages_after = db.frames(selectors.readable_messages_after)
post_message = db.frames(services.post_message)


def _message_frame(event: dict[str, Any]) -> dict[str, Any]:
    return {"type": ServerFrame.MESSAGE, "message": event["message"]}


def _typing_frame(event: dict[str, Any]) -> dict[str, Any]:
    return {"type": ServerFrame.TYPING, "user": event["user"]}


def _presence_frame(event: dict[str, Any]) -> dict[str, Any]:
    return event["frame"]  # made once per room and interval by the worker (chat.presence)


class ChatConsumer(RealtimeConsumer):
    frames = CHAT_FRAMES
    endpoint = "chat"

    room = None
    present = False
    access_version = 0

    async def authenticated(self) -> None:
        room, allowed = await joinable_room(slug=self.scope["url_route"]["kwargs"]["slug"], user=self.user)
        if room is None:
            raise CloseSocket(CloseCode.NOT_FOUND, "no_such_room")
        if not allowed:
            raise CloseSocket(CloseCode.FORBIDDEN, "forbidden")
        self.room = room
        self.access_version = room.access_version  # read before the membership check
        self.group = room_group(room.pk)
        self.username = self.user.get_username()
        self.abuse = ratelimit.AbuseMeter()
        self.last_typing = -math.inf
        # Join before reading the state, so nothing committed in between is missed.
        await self.join(self.group)
        state = await room_state(room=room, history=settings.CHAT_HISTORY)
        if state.access_version != self.access_version:
            # Someone lost access between the check and joining the group, whose
            # revoke this socket may have missed: check again.
            access = await access_at_join(room_id=room.pk, user=self.user)
            if not access.allowed:
                raise CloseSocket(CloseCode.FORBIDDEN, "forbidden")
            self.access_version = access.version
        self.live_from = self.cursor = state.last_id or 0
        self.present = True  # from here on, leave on close (a leave of an absent entry is a no-op)
        snapshot = await presence.enter(self.group, socket=self.socket_id, user=self.username)
        await self.send_frame(
            {
                "type": ServerFrame.WELCOME,
                "user": {"id": self.user.pk, "username": self.username},
                "room": room_dict(room),
                "messages": state.messages,
                "online": snapshot.online,
                "online_count": snapshot.count,
                "last_id": state.last_id,
            }
        )

    async def left(self) -> None:
        if not self.present:
            return
        self.present = False
        presence.leave(self.group, socket=self.socket_id, user=self.username)

    # --- client frames ---------------------------------------------------------------
    async def frame_message(self, frame: ChatPost) -> None:
        self._require_room()
        if not await ratelimit.allow_post(user_id=self.user.pk, room_id=self.room.pk):
            await self.send_error(ErrorCode.RATE_LIMITED, "too many messages, slow down", frame.ref)
            if self.abuse.hit():
                raise CloseSocket(CloseCode.RATE_LIMITED, "rate_limited")
            return
        try:
            message, created = await post_message(
                room=self.room, author=self.user, body=frame.body, client_id=frame.client_id
            )
        except ValidationError as exc:
            code = ErrorCode.TOO_LARGE if services.is_too_long(exc) else ErrorCode.INVALID_MESSAGE
            raise FrameError(code, "; ".join(exc.messages), ref=frame.ref) from None
        except PermissionDenied:
            raise FrameError(ErrorCode.FORBIDDEN, "you may not post in this room", ref=frame.ref) from None
        if not created:
            # A re-send: answer this socket alone with the original.
            if message.is_deleted:
                await self.send_frame({"type": ServerFrame.MESSAGE_DELETED, "id": message.id})
            else:
                await self.send_frame(
                    {"type": ServerFrame.MESSAGE, "message": message_dict(message, room_slug=self.room.slug)}
                )

    async def frame_typing(self, frame: Typing) -> None:
        self._require_room()
        now = time.monotonic()
        if now - self.last_typing < settings.CHAT_TYPING_INTERVAL_SECONDS:
            return  # advisory and frequent: extra ones are dropped, not refused
        self.last_typing = now
        await publish(self.group, {"type": Event.TYPING, "user": self.username, "origin": self.socket_id})

    async def frame_resume(self, frame: Resume) -> None:
        self._require_room()
        limit = settings.CHAT_REPLAY_LIMIT
        # Ids the client says it has count as delivered.
        if frame.after > self.live_from:
            self.cursor = max(self.cursor, frame.after)
        rows = await readable_messages_after(
            room=self.room,
            user=self.user,
            after=frame.after,
            limit=limit + 1,
            skip=(self.live_from, self.cursor),
        )
        if rows is None:
            await self.send_error(ErrorCode.FORBIDDEN, "you are no longer a member of this room", frame.ref)
            raise CloseSocket(CloseCode.FORBIDDEN, "forbidden")
        more = len(rows) > limit
        rows = rows[:limit]
        for row in rows:
            await self._deliver(row)
        last_id = rows[-1].id if more else (max(frame.after, self.cursor) or None)
        await self.send_frame({"type": ServerFrame.REPLAY_DONE, "last_id": last_id, "more": more})

    # --- channel-layer events ------------------------------------------------------------
    # Each has a synchronous quick_ form for the hub's common case (see RealtimeConsumer).
    def quick_push_message(self, event: dict[str, Any]) -> bool:
        if (event.get("access_version") or 0) > self.access_version:
            return False  # someone lost access since this socket's check: is it still a member?
        return self.write_next(event, event["message"]["id"], _message_frame, "message")

    async def push_message(self, event: dict[str, Any]) -> None:
        message = event["message"]
        if message["id"] <= self.cursor:
            return  # already delivered by a replay or a gap fill
        if (event.get("access_version") or 0) > self.access_version:
            self.needs_io()
            access = await room_access(room_id=self.room.pk, user=self.user)
            if not access.allowed:
                await self._lost_access()
                return
            self.access_version = max(self.access_version, access.version)
        if (event.get("prev_id") or 0) > self.cursor:
            self.needs_io()
            await self._fill_gap(up_to=message["id"])
            return
        self.cursor = message["id"]
        # The same text for every socket of the room on this worker.
        await self.send_shared(event, _message_frame, "message")

    async def push_message_deleted(self, event: dict[str, Any]) -> None:
        await self.send_frame({"type": ServerFrame.MESSAGE_DELETED, "id": event["id"]})

    def quick_push_revoke(self, event: dict[str, Any]) -> bool:
        return not self._loses_access(event)  # a close needs the async handler

    async def push_revoke(self, event: dict[str, Any]) -> None:
        if self._loses_access(event):
            await self._lost_access()

    def quick_push_typing(self, event: dict[str, Any]) -> bool:
        return event.get("origin") == self.socket_id or self.write_shared(event, _typing_frame, "typing")

    async def push_typing(self, event: dict[str, Any]) -> None:
        if event.get("origin") != self.socket_id:
            await self.send_shared(event, _typing_frame, "typing")

    def quick_push_presence(self, event: dict[str, Any]) -> bool:
        return self.write_shared(event, _presence_frame, "presence")

    async def push_presence(self, event: dict[str, Any]) -> None:
        # The same text for every socket of the room on this worker.
        await self.send_shared(event, _presence_frame, "presence")

    # --- helpers ------------------------------------------------------------------------
    def _require_room(self) -> None:
        # Frames that race the 4403/4404 close of a socket never admitted to a room.
        if self.room is None:
            raise FrameError(ErrorCode.FORBIDDEN, "not in a room")

    def _loses_access(self, event: dict[str, Any]) -> bool:
        """Does this `revoke` event take this socket's access away? (No I/O: called inline by the hub.)"""
        version = event.get("version") or 0
        if self.room is None or version <= self.access_version:
            return False  # not admitted yet, or admitted after that change (a re-added member)
        users = event.get("users")
        if users is not None:
            lost = self.user.pk in users
        else:  # the room was made private: everyone but its members
            members = event.get("_members")
            if members is None:
                members = event["_members"] = frozenset(event.get("members") or ())
            lost = self.user.pk not in members
        if not lost and version == self.access_version + 1:
            # Still a member as of this change. Only the next version: revokes
            # may arrive out of order, and skipping one could skip this user's.
            self.access_version = version
        return lost

    async def _lost_access(self) -> None:
        logger.info("socket lost access room=%s user=%s", self.room.pk, self.user.pk)
        await self.close_with(CloseCode.FORBIDDEN, "forbidden")

    async def _fill_gap(self, *, up_to: int) -> None:
        limit = settings.CHAT_REPLAY_LIMIT
        while self.cursor < up_to:
            rows = await readable_messages_after(
                room=self.room, user=self.user, after=self.cursor, limit=limit, up_to=up_to
            )
            if rows is None:
                await self._lost_access()
                return
            if not rows:
                break
            for row in rows:
                await self._deliver(row)
        # Writers to a room are serialized by its row lock, so once `up_to` has
        # committed every smaller id has too: what the read did not return was deleted.
        self.cursor = max(self.cursor, up_to)

    async def _deliver(self, row) -> None:
        if self.live_from < row.id <= self.cursor:
            return  # went out live while this replay was reading
        self.cursor = max(self.cursor, row.id)
        await self.send_frame(
            {"type": ServerFrame.MESSAGE, "message": message_dict(row, room_slug=self.room.slug)}
        )
