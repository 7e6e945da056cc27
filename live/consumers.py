"""`/ws/live/`: any number of live topics on one socket (contract v2).

Anonymous sockets are accepted here, and only here (`allows_anonymous`), and
may read only public topics; an `auth` frame makes one authenticated. Frames:
`subscribe` / `unsubscribe` (at most 100 names a frame, LIVE_MAX_TOPICS in
all), `publish` where the topic lets clients publish, `ping`. A refused
topic gets an error frame naming it (`unknown_topic`, `forbidden`,
`too_large` past the socket's topic cap) while the frame's other topics go
ahead. Values go out through the socket's `Outbox` (conflation); the worker's
`Router` holds one hub subscription per topic.

Access is checked when a topic is subscribed, and again when a declaration
covering it changes (`push_topic_recheck`, from the worker's router): a
subscription no longer allowed ends with the error frame a subscribe would
get now (`forbidden`, or `unknown_topic` when no declaration covers it).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from django.conf import settings

from live import limits
from live.access import Access
from live.fanout import get_router
from live.outbox import Outbox
from live.selectors import Rules
from live.services import TopicError, checked, encode_value, topic_event
from realtime.consumers import CloseSocket, RealtimeConsumer
from realtime.fanout import push
from realtime.operations import observe
from realtime.operations.errors import UNAVAILABLE_ERRORS
from realtime.protocol import (
    LIVE_FRAMES,
    LIVE_NAMES_PER_FRAME,
    LIVE_PUBLISH_MAX_BYTES,
    CloseCode,
    CloseReason,
    ErrorCode,
    FrameError,
    Publish,
    ServerFrame,
    Subscribe,
    Unsubscribe,
    error_frame,
    topic_group,
)


class LiveConsumer(RealtimeConsumer):
    frames = LIVE_FRAMES
    endpoint = "live"
    allows_anonymous = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outbox: Outbox | None = None
        self.subscribe_bucket = limits.subscribe_bucket()
        self.publish_buckets: dict[int, limits.Bucket] = {}
        self.access = Access()

    async def base_send(self, message: dict[str, Any]) -> None:
        # Values corked this turn (live.outbox) go first, so frames keep their order.
        if self.outbox is not None:
            self.outbox.uncork()
        await super().base_send(message)

    # --- who is calling ---------------------------------------------------------------
    async def anonymous(self) -> None:
        try:
            taken = await limits.take_anonymous(self.scope, self.socket_id)
        except UNAVAILABLE_ERRORS:
            raise CloseSocket(CloseCode.SERVER_ERROR, "unavailable") from None
        if taken and self.closed:
            limits.release_anonymous(self.socket_id)  # gone while the slot was being taken
        if not taken:
            raise CloseSocket(CloseCode.RATE_LIMITED, CloseReason.TOO_MANY_SOCKETS)
        self._ready()

    async def authenticated(self) -> None:
        # An anonymous socket that sent `auth` now counts as its user's, not its address's.
        limits.release_anonymous(self.socket_id)
        self.access.forget()
        self.publish_buckets.clear()
        self._ready()

    def _ready(self) -> None:
        if self.outbox is None:
            self.outbox = Outbox(self)

    async def left(self) -> None:
        limits.release_anonymous(self.socket_id)
        outbox, self.outbox = self.outbox, None
        if outbox is None:
            return
        topics = list(outbox.topics)
        outbox.close()
        await get_router().remove(topics, outbox)

    # --- client frames --------------------------------------------------------------
    async def frame_subscribe(self, frame: Subscribe) -> None:
        names = self._names(frame.topics)
        router = get_router()
        revision = router.revision
        rules = await self.access.rules()
        outbox = self.outbox
        if outbox is None:
            return  # the socket was refused (and is closing)
        accepted: list[str] = []
        room = settings.LIVE_MAX_TOPICS - len(outbox.topics)  # for topics new to this socket
        for name in names:
            rule = rules.find(name)
            if rule is None:
                await self._refuse(ErrorCode.UNKNOWN_TOPIC, name, "no such topic", frame.ref)
            elif not await self.access.may_read(self.user, rule):
                await self._refuse(ErrorCode.FORBIDDEN, name, "you may not read this topic", frame.ref)
            elif name not in outbox.topics and room <= 0:
                detail = f"at most {settings.LIVE_MAX_TOPICS} topics per socket"
                await self._refuse(ErrorCode.TOO_LARGE, name, detail, frame.ref)
            else:
                room -= name not in outbox.topics
                accepted.append(name)
        if not accepted or self.closed:
            return
        for name in accepted:
            outbox.subscribing(name)
        try:
            # Joined before the snapshot is read, so no value published in between is missed.
            await router.add(accepted, outbox)
            values = await router.store.read(accepted)
        except BaseException:
            for name in accepted:
                outbox.unsubscribe(name)
            await router.remove(accepted, outbox)
            raise
        for value in values:
            outbox.snapshot(value)
        await outbox.flush()
        if router.revision != revision:
            # Declarations changed while these were checked, and the router's re-check may
            # have looked before this socket held them: check them against the new ones.
            await self._recheck(accepted, await self.access.fresh_rules())

    async def frame_unsubscribe(self, frame: Unsubscribe) -> None:
        names = self._names(frame.topics)
        outbox = self.outbox
        gone = [name for name in names if outbox is not None and name in outbox.topics]
        for name in gone:
            outbox.unsubscribe(name)
        await get_router().remove(gone, outbox)
        await self.send_frame({"type": ServerFrame.UNSUBSCRIBED, "topics": names})

    async def frame_publish(self, frame: Publish) -> None:
        try:
            await self._publish(frame.topic, frame.data)
        except _TopicRefused as exc:
            await self._refuse(exc.code, frame.topic, exc.detail, frame.ref)

    async def _publish(self, name: str, data: Any) -> None:
        rule = (await self.access.rules()).find(name)
        if rule is None:
            raise _TopicRefused(ErrorCode.UNKNOWN_TOPIC, "no such topic")
        if self.user is None:
            raise _TopicRefused(ErrorCode.NOT_AUTHENTICATED, "log in to publish")
        if not await self.access.may_publish(self.user, rule):
            raise _TopicRefused(ErrorCode.FORBIDDEN, "clients may not publish to this topic")
        bucket = self.publish_buckets.get(rule.id)
        if bucket is None:
            bucket = self.publish_buckets[rule.id] = limits.Bucket(rule.publish_rate, rule.publish_burst)
        if not bucket.take():
            raise _TopicRefused(ErrorCode.RATE_LIMITED, "publishing too fast to this topic")
        try:
            text = encode_value(data)
            checked(name, rule, text, limit=LIVE_PUBLISH_MAX_BYTES)
        except TopicError as exc:
            raise _TopicRefused(exc.code, exc.detail) from None
        value = await get_router().store.publish(name, text)
        await push.publish(topic_group(name), topic_event(value))

    # --- declarations changed -------------------------------------------------------------
    def push_topic_recheck(self, event: dict[str, Any]) -> Awaitable[None]:
        self.needs_io()  # it may read the user's groups, and sends through ASGI
        return self._recheck(event["topics"], event["rules"])

    async def _recheck(self, topics: list[str], rules: Rules) -> None:
        """End the subscriptions among `topics` that `rules` no longer allow, each with its error frame."""
        for name in topics:
            outbox = self.outbox
            if outbox is None or name not in outbox.topics:
                continue
            rule = rules.find(name)
            if rule is None:
                code, detail = ErrorCode.UNKNOWN_TOPIC, "this topic is no longer declared"
            elif not await self.access.may_read(self.user, rule):
                code, detail = ErrorCode.FORBIDDEN, "you may no longer read this topic"
            else:
                continue
            if name not in outbox.topics or outbox is not self.outbox:
                continue  # unsubscribed meanwhile
            outbox.unsubscribe(name)
            await get_router().remove([name], outbox)
            await self._refuse(code, name, detail, None)

    # --- helpers ----------------------------------------------------------------------
    def _names(self, names: list[str]) -> list[str]:
        if not self.subscribe_bucket.take():
            raise FrameError(ErrorCode.RATE_LIMITED, "subscribing too fast")
        unique = list(dict.fromkeys(names))
        if len(unique) > LIVE_NAMES_PER_FRAME:
            raise FrameError(ErrorCode.TOO_LARGE, f"at most {LIVE_NAMES_PER_FRAME} topics a frame")
        return unique

    async def _refuse(self, code: ErrorCode, topic: str, detail: str, ref: str | None) -> None:
        observe.error(self, code)  # metrics and the error log line
        await self.send_frame(error_frame(code, detail, ref, topic=topic))


class _TopicRefused(Exception):
    """A publish refused: its error frame names the topic."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
