"""Process-local fan-out: one channel-layer message per worker, not per socket.

Plain Channels puts every socket in the channel-layer group, so a broadcast to
a room of 1,000 sockets is 1,000 Redis messages, 1,000 msgpack decodes, 1,000
JSON encodes and 1,000 task wake-ups. Here each worker process has one hub
with one channel; the hub joins a group when its first local socket does and
leaves it with the last. A broadcast reaches each worker once; the hub encodes
the client frame once and hands it to each local subscriber in turn.

Some events are for the worker rather than for each socket (presence changes,
which a worker batches before its sockets see them): a handler registered with
`observe(event_type, handler)` gets each such event once, with its group, and
can later hand local sockets an event of its own with `deliver_local`.

Subscribers implement `hub_deliver(event)`, which returns an awaitable (or
None when it is done, or has queued the event) and must not block on I/O
other than the send itself. The hub hands each of a group's local sockets
the same `LocalEvent`, which carries its encodings beside its items, so the
frame is encoded once per worker and the event itself is never written.

Events travel in envelopes (realtime.fanout.events). A batch, one event for
many groups, reaches every hub; each hands each group that has local sockets
its own event, as if it had come in its own envelope.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from channels.layers import get_channel_layer
from django.conf import settings

from realtime.fanout.echo import LayerEcho
from realtime.fanout.events import (
    HUB_BATCH,
    HUB_EVENT,
    LocalEvent,
    batch_envelope,
    envelope,
    for_group,
)
from realtime.operations import observe
from realtime.operations.errors import UNAVAILABLE_ERRORS
from realtime.protocol import broadcast_group

logger = logging.getLogger("realtime.hub")

# The envelope makers live in realtime.fanout.events; tests and fixtures import them from here too.
__all__ = ["Hub", "Subscriber", "batch_envelope", "close_hub", "envelope", "for_group", "get_hub"]

# Synchronous deliveries between two yields to the event loop (see Hub.dispatch).
_YIELD_EVERY = 128
# Most messages taken from the layer in one round (see Hub._dispatch_round).
_ROUND_LIMIT = 64


class Subscriber(Protocol):
    def hub_deliver(self, event: LocalEvent) -> Awaitable[None] | None: ...

    def hub_lost(self) -> None:
        """The live feed broke: events may have been lost; the socket should go away."""

    def hub_cork(self) -> None:
        """Hold frames written from now on, to send them in one write at `hub_uncork`."""

    def hub_uncork(self) -> None: ...


class Hub:
    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.members: dict[str, set[Subscriber]] = {}
        self._joined: dict[str, asyncio.Future] = {}
        self._tasks: list[asyncio.Task] = []
        self._starting: asyncio.Future | None = None
        # Heartbeats travel on a channel of their own, so a backlog of events
        # being delivered does not delay them and pass for a dead Redis.
        self.echo = LayerEcho(self.layer)
        # Layers that can hand over a backlog at once (realtime.fanout.layer); others give one at a time.
        self._receive_ready = getattr(self.layer, "receive_ready", None)
        # Event types handled once per worker instead of once per socket (see observe).
        self._observers: dict[str, Callable[[str, dict[str, Any]], None]] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def observe(self, event_type: str, handler: Callable[[str, dict[str, Any]], None]) -> None:
        """Hand events of `event_type` to `handler(group, event)` once, not to each socket."""
        self._observers[event_type] = handler

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Await `closer()` when the hub closes (what was built on it stops with it)."""
        self._closers.append(closer)

    async def deliver_local(self, group: str, event: dict[str, Any]) -> None:
        """Hand an event made on this worker to the group's local sockets."""
        await self._deliver(group, [event])

    async def _start(self) -> None:
        # Sockets that connect together all wait for the one channel: none
        # may join a group before it exists.
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._open_channel())
        await asyncio.shield(self._starting)
        # Batches reach every hub through this group. Joined here rather than
        # in _open_channel so that a failure is retried by the next socket.
        await self._join(broadcast_group())

    async def _open_channel(self) -> None:
        # The default prefix matters: channels_redis reads all of a process's
        # channels through one shared key per prefix.
        self.channel = await self.layer.new_channel()
        self._tasks = [
            asyncio.ensure_future(self._receive_loop()),
            asyncio.ensure_future(self._refresh_loop()),
            asyncio.ensure_future(self._heartbeat_loop()),
        ]

    async def subscribe(self, group: str, subscriber: Subscriber) -> None:
        """Deliver the group's events to `subscriber` from now on."""
        await self._start()
        self.members.setdefault(group, set()).add(subscriber)
        await self._join(group)

    async def _join(self, group: str) -> None:
        joined = self._joined.get(group)
        if joined is None:
            # The first local member joins the layer group; later ones wait for it.
            joined = self._joined[group] = asyncio.ensure_future(self.layer.group_add(group, self.channel))
        try:
            await asyncio.shield(joined)
        except BaseException:
            if self._joined.get(group) is joined and joined.done():
                del self._joined[group]  # let the next subscriber try again
            raise

    async def unsubscribe(self, group: str, subscriber: Subscriber) -> None:
        members = self.members.get(group)
        if members is None:
            return
        members.discard(subscriber)
        if not members:
            del self.members[group]
            self._joined.pop(group, None)
            try:
                await self.layer.group_discard(group, self.channel)
            except UNAVAILABLE_ERRORS:
                pass  # the group entry expires by itself

    async def _receive_loop(self) -> None:
        backoff = 0.1
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("hub: channel layer receive failed; retrying", exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                if await self._rejoin_all():
                    backoff = 0.1
                continue
            backoff = 0.1
            # A backlog (events arriving faster than a big room takes them)
            # is taken in one round: see _dispatch_round.
            ready = self._receive_ready(self.channel, _ROUND_LIMIT) if self._receive_ready else []
            await self._dispatch_round([message, *ready])

    async def _dispatch_round(self, messages: list[dict[str, Any]]) -> None:
        """Deliver messages in arrival order; consecutive events of one group together.

        Together means socket by socket: each socket gets all of the run's
        events in one write (one system call instead of one per event), and
        its order of events is the arrival order.
        """
        run: list[dict[str, Any]] = []
        for message in messages:
            if run and (message.get("type") == HUB_BATCH or message.get("group") != run[0].get("group")):
                await self._dispatch_run(run)
                run = []
            if message.get("type") == HUB_BATCH:
                await self.dispatch_batch(message)
            else:
                run.append(message)
        if run:
            await self._dispatch_run(run)

    async def dispatch(self, message: dict[str, Any]) -> None:
        await self._dispatch_run([message])

    async def _dispatch_run(self, messages: list[dict[str, Any]]) -> None:
        """Deliver the events of `messages`, all for one group, to its local sockets."""
        group = messages[0].get("group")
        events = []
        for message in messages:
            event = message.get("event")
            if message.get("type") != HUB_EVENT or not isinstance(event, dict):
                logger.warning("hub: dropped a message without an envelope")
                continue
            observer = self._observers.get(event.get("type"))
            if observer is None:
                events.append(event)
                continue
            try:
                observer(group, event)
            except Exception:
                logger.exception("hub: an observer failed on %s", event.get("type"))
        if events:
            await self._deliver(group, events)

    async def _deliver(self, group: str, events: list[dict[str, Any]]) -> None:
        """Hand `events`, in order, to each local socket of `group`: the same LocalEvent to each."""
        local = [LocalEvent(event) for event in events]
        for count, subscriber in enumerate(tuple(self.members.get(group, ())), 1):
            await self._deliver_all(subscriber, local)
            if count % _YIELD_EVERY == 0:
                # Most deliveries finish without awaiting anything, so a big
                # room would hold the loop for the whole round: let the
                # poster's next database reply and Redis replies in between.
                await asyncio.sleep(0)
        for event in events:
            observe.event_delivered(event)  # commit to this worker's last local socket

    @staticmethod
    async def _deliver_all(subscriber: Subscriber, events: list[LocalEvent]) -> None:
        if len(events) == 1:
            try:
                pending = subscriber.hub_deliver(events[0])
                if pending is not None:
                    await pending
            except Exception:
                logger.exception("hub: delivery to one socket failed")
            return
        # Frames written while corked leave in one write at uncork, which
        # must come before anything that can let other code write to the
        # socket (an await), or frames would change order.
        subscriber.hub_cork()
        try:
            for event in events:
                try:
                    pending = subscriber.hub_deliver(event)
                    if pending is not None:
                        subscriber.hub_uncork()
                        await pending
                        subscriber.hub_cork()
                except Exception:
                    # One broken socket must not stop delivery to the others.
                    logger.exception("hub: delivery to one socket failed")
        finally:
            subscriber.hub_uncork()

    async def dispatch_batch(self, message: dict[str, Any]) -> None:
        """Deliver a batch (see `batch_envelope`) to the local sockets of each of its groups.

        Most groups of a big batch have no socket on this worker: those cost
        a dict lookup. The others get one event dict per group, so each
        group's frame is encoded once however many of its sockets are here,
        and per-group ordering is that of the receive loop.
        """
        event = message.get("event")
        recipients = message.get("recipients")
        if not isinstance(event, dict) or not isinstance(recipients, list | tuple):
            logger.warning("hub: dropped a malformed batch")
            return
        local = 0
        for recipient in recipients:
            try:
                group, fields = recipient
                if group not in self.members:
                    continue
                own = for_group(event, fields)
            except (TypeError, ValueError, AttributeError):
                # Skip it rather than let it end the receive loop.
                logger.warning("hub: dropped a malformed batch entry")
                continue
            await self._deliver(group, [own])
            local += 1
            if local % _YIELD_EVERY == 0:
                await asyncio.sleep(0)  # as in dispatch: one inbox each, but many of them

    async def _refresh_loop(self) -> None:
        # Group entries expire in Redis, and a Redis restart forgets them:
        # re-adding every so often keeps membership true without a restart.
        while True:
            await asyncio.sleep(settings.HUB_REFRESH_SECONDS)
            await self._rejoin_all()

    async def _heartbeat_loop(self) -> None:
        """Notice a broken live feed and make the local sockets reconnect.

        The pub/sub layer reconnects to Redis by itself and never tells its
        reader, so events published while the link was down vanish silently
        and a quiet inbox would never learn it missed something. So, while it
        has sockets, the hub sends itself a ping through Redis every
        HUB_HEARTBEAT_SECONDS; a ping that cannot be sent, or does not come
        back within HUB_HEARTBEAT_TIMEOUT_SECONDS (Redis down, restarted or
        frozen), closes every local socket with 1011 `unavailable`. Clients
        reconnect and `resume` from PostgreSQL, which loses nothing.
        """
        while True:
            await asyncio.sleep(settings.HUB_HEARTBEAT_SECONDS)
            if not self.members:
                continue
            try:
                # Not send + receive under the timeout: see realtime/fanout/echo.py.
                async with asyncio.timeout(settings.HUB_HEARTBEAT_TIMEOUT_SECONDS):
                    await self.echo.round_trip()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a timeout or any layer failure: the feed is not trustworthy
                observe.layer_failure("hub_heartbeat")
                logger.warning(
                    "hub: live feed lost (%s); closing %d local sockets",
                    type(exc).__name__,
                    self._local_count(),
                )
                self._lose_all()

    def _local_count(self) -> int:
        return len({s for members in self.members.values() for s in members})

    def _lose_all(self) -> None:
        for subscriber in {s for members in self.members.values() for s in members}:
            try:
                subscriber.hub_lost()
            except Exception:
                logger.exception("hub: closing one socket failed")

    async def _rejoin_all(self) -> bool:
        try:
            for group in (broadcast_group(), *self.members):
                await self.layer.group_add(group, self.channel)
        except Exception:
            logger.warning("hub: could not rejoin groups", exc_info=True)
            return False
        return True

    async def close(self) -> None:
        """Stop receiving (tests close the hub before their event loop ends)."""
        for closer in self._closers:
            await closer()
        self._closers = []
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: S110 - stopping anyway
                pass
        self._tasks = []
        await self.echo.close()
        if self.channel is not None:
            # A worker that stops takes its channel with it; a test's hub, whose
            # loop ends, should not stay in the broadcast group of the next test's.
            try:
                await self.layer.group_discard(broadcast_group(), self.channel)
            except Exception:  # noqa: S110 - the entry expires by itself
                pass


# One hub per event loop: a worker has one loop; tests make one per test.
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def close_hub() -> Awaitable[None] | None:
    """Close this loop's hub, if it has one."""
    hub = _hubs.pop(asyncio.get_running_loop(), None)
    return hub.close() if hub is not None else None


def get_hub() -> Hub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
