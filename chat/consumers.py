"""`/ws/chat/<slug>/`: one chat room, live.

Messages reach each socket exactly once, in id order, as notifications do:
realtime.streams holds the cursor, resume and gap fill; this module supplies
the room's selector and frames.

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
from collections.abc import Awaitable
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError

from chat import presence, ratelimit, selectors, services
from chat.serializers import message_dict, room_dict
from realtime import db
from realtime.consumers import CloseSocket
from realtime.fanout.events import LocalEvent
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
from realtime.streams import OrderedStreamConsumer, item_frame

logger = logging.getLogger("chat.socket")

# The database is reached only through these, each wrapped once, in the lane
# of its kind (realtime.db): a join storm does not hold up the posts.
# Sockets joining together are read together (realtime.db.batched): one read of a room's
# history serves all its sockets arriving at once.
joinable_room = db.batched(selectors.joinable_rooms)
room_state = db.batched(selectors.room_states)
access_at_join = db.handshake(selectors.room_access)
room_access = db.frames(selectors.room_access)
# Sockets resuming together (a reconnect storm) are read together too, in the frames lane.
readable_messages = db.batched(selectors.readable_messages_many, lane="frames")
post_message = db.frames(services.post_message)


def _typing_frame(event: dict[str, Any]) -> dict[str, Any]:
    return {"type": ServerFrame.TYPING, "user": event["user"]}


def _presence_frame(event: dict[str, Any]) -> dict[str, Any]:
    return event["frame"]  # made once per room and interval by the worker (chat.presence)


_message_frame = item_frame(ServerFrame.MESSAGE)


def _member_ids(event: LocalEvent) -> frozenset[int]:
    return frozenset(event.get("members") or ())


class ChatConsumer(OrderedStreamConsumer):
    frames = CHAT_FRAMES
    endpoint = "chat"
    replay_limit_setting = "CHAT_REPLAY_LIMIT"
    resume_always_reads = True  # every read checks membership (readable_messages_many)

    room = None
    present = False
    access_version = 0

    async def authenticated(self) -> None:
        room, allowed = await joinable_room((self.scope["url_route"]["kwargs"]["slug"], self.user))
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
        state = await room_state((room, settings.CHAT_HISTORY))
        if state.access_version != self.access_version:
            # Someone lost access between the check and joining the group, whose
            # revoke this socket may have missed: check again.
            access = await access_at_join(room_id=room.pk, user=self.user)
            if not access.allowed:
                raise CloseSocket(CloseCode.FORBIDDEN, "forbidden")
            self.access_version = access.version
        self.start_stream(state.last_id)
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

    # --- the room as an ordered stream (realtime.streams) -------------------------------
    def row_frame(self, row) -> dict[str, Any]:
        return {"type": ServerFrame.MESSAGE, "message": message_dict(row, room_slug=self.room.slug)}

    async def read_items(self, **query: Any):
        # Checks membership on every read: None once this user may not read the room.
        return await readable_messages((self.room, self.user, query))

    def require_stream(self) -> None:
        self._require_room()

    async def stream_refused(self, resume: Resume | None) -> None:
        if resume is None:  # a gap fill: close, as a revoke does
            await self._lost_access()
            return
        await self.send_error(ErrorCode.FORBIDDEN, "you are no longer a member of this room", resume.ref)
        raise CloseSocket(CloseCode.FORBIDDEN, "forbidden")

    # --- channel-layer events (one handler each: see realtime.delivery) -----------------
    def push_message(self, event: LocalEvent) -> Awaitable[None] | None:
        if (event.get("access_version") or 0) <= self.access_version:
            return self.push_item(event, event["message"]["id"], _message_frame, "message")
        if event["message"]["id"] <= self.cursor:
            return None  # already delivered by a replay or a gap fill
        self.needs_io()  # someone lost access since this socket's check: is it still a member?
        return self._push_if_member(event)

    def push_message_deleted(self, event: LocalEvent) -> Awaitable[None]:
        return self.send_frame({"type": ServerFrame.MESSAGE_DELETED, "id": event["id"]})

    def push_revoke(self, event: LocalEvent) -> Awaitable[None] | None:
        return self._lost_access() if self._loses_access(event) else None

    def push_typing(self, event: LocalEvent) -> Awaitable[None] | None:
        if event.get("origin") == self.socket_id:
            return None  # this socket's own typing
        return self.send_shared(event, _typing_frame, "typing")

    def push_presence(self, event: LocalEvent) -> Awaitable[None] | None:
        # The same bytes for every socket of the room on this worker.
        return self.send_shared(event, _presence_frame, "presence")

    # --- helpers ------------------------------------------------------------------------
    def _require_room(self) -> None:
        # Frames that race the 4403/4404 close of a socket never admitted to a room.
        if self.room is None:
            raise FrameError(ErrorCode.FORBIDDEN, "not in a room")

    async def _push_if_member(self, event: LocalEvent) -> None:
        access = await room_access(room_id=self.room.pk, user=self.user)
        if not access.allowed:
            await self._lost_access()
            return
        self.access_version = max(self.access_version, access.version)
        pending = self.push_message(event)  # now the common case
        if pending is not None:
            await pending

    def _loses_access(self, event: LocalEvent) -> bool:
        """Does this `revoke` event take this socket's access away? (No I/O: called inline by the hub.)"""
        version = event.get("version") or 0
        if self.room is None or version <= self.access_version:
            return False  # not admitted yet, or admitted after that change (a re-added member)
        users = event.get("users")
        if users is not None:
            lost = self.user.pk in users
        else:  # the room was made private: everyone but its members
            lost = self.user.pk not in event.once(_member_ids)  # one set per worker, not per socket
        if not lost and version == self.access_version + 1:
            # Still a member as of this change. Only the next version: revokes
            # may arrive out of order, and skipping one could skip this user's.
            self.access_version = version
        return lost

    async def _lost_access(self) -> None:
        logger.info("socket lost access room=%s user=%s", self.room.pk, self.user.pk)
        await self.close_with(CloseCode.FORBIDDEN, "forbidden")
