"""How group events reach a socket: one handler at a time, and with no coroutine when none is needed.

`EventDelivery` is mixed into every socket consumer (realtime.consumers, which
supplies `closed`, `endpoint`, `_run`, `close_with` and `send_encoded`). It is
the socket as the hub sees it (`hub_deliver`, `hub_cork`, `hub_uncork`,
`hub_lost`), keeps Channels' one-handler-at-a-time guarantee for frames and
events together, and writes frames that are the same for every socket of a
worker (`send_shared`).

One handler per event type: `push_x(event)` handles "push.x". It is a plain
function, called by the hub inline while the socket is idle and from the
queue otherwise, so its filter is written once for both. It does at once what
needs no waiting (deciding whether the event is for this socket, moving a
cursor, a write on the fast path) and returns None, or returns an awaitable
for what must wait (an ASGI send, a close, a database read). Before returning
one that reads the database it calls `needs_io()`.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from realtime import adapter
from realtime.adapter import wire
from realtime.fanout.events import LocalEvent
from realtime.operations import observe
from realtime.protocol import CloseCode


class Deferred(Exception):
    """An event handler called inline by the hub needs to wait for I/O."""


class EventDelivery:
    """Events from the hub, in order, never two handlers at once.

    Concurrency: Channels runs one handler at a time per consumer, but the
    hub delivers group events from its own task. To keep the one-at-a-time
    guarantee without a task per delivery, hub events run inline only while
    the consumer is idle; while a handler runs (or events are queued), they
    wait in `_pending` and run, in order, right after it. A handler that
    needs the database while inline (`needs_io`) puts its event in the queue
    and the queue is drained under the lock.
    """

    closed = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._serial = asyncio.Lock()
        self._in_serial = False
        # Events waiting behind a busy handler; made on first use (a deque is
        # 600 bytes, and most sockets never need one).
        self._pending: deque[LocalEvent] | tuple = ()
        self._drainer: asyncio.Future | None = None
        # Writes pre-built frames straight to the connection; None without a fast path.
        self._write: wire.Writer | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Only the server's websocket.* messages arrive here (no channel-layer
        # channel). Channels' own dispatch also closes stale database
        # connections before every frame, a thread hop per frame; every query
        # here goes through database_sync_to_async, which does that around
        # each call already.
        handler = getattr(self, adapter.handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        async with self._serial:
            self._in_serial = True
            try:
                await handler(message)
                await self._drain_pending()
            finally:
                self._in_serial = False

    # --- the hub's side ------------------------------------------------------------
    @property
    def writer(self) -> wire.Writer | None:
        """The pre-framed writer onto this socket's connection, or None (send through ASGI)."""
        return self._write

    def hub_deliver(self, event: LocalEvent) -> Awaitable[None] | None:
        """Called by the hub for each group event; see the class docstring."""
        if self.closed:
            return None
        if self._serial.locked() or self._pending:
            self._queue(event)
            return None
        try:
            # As `_event_handler`, inline: this runs once per socket per event.
            return getattr(self, _handler_name(event["type"]), _ignore)(event)
        except Deferred:
            self._queue(event)
            self._drainer = asyncio.ensure_future(self._drain_later())
            return None

    def hub_cork(self) -> None:
        if self._write is not None:
            self._write.cork()

    def hub_uncork(self) -> None:
        if self._write is not None:
            self._write.uncork()

    def hub_lost(self) -> None:
        """The hub's live feed broke (Redis down or restarted): events may be gone.

        Close rather than sit silent; the client reconnects and resumes from the
        database. 1011 with reason `unavailable`, as for a socket whose groups
        cannot be set up.
        """
        if not self.closed:
            self._closing = asyncio.ensure_future(self.close_with(CloseCode.SERVER_ERROR, "unavailable"))

    def needs_io(self) -> None:
        """Call in an event handler before returning an awaitable that reads the database."""
        if not self._in_serial:
            raise Deferred

    # --- frames the same for every socket ------------------------------------------------
    def send_shared(
        self, event: LocalEvent, build: Callable[[dict[str, Any]], dict[str, Any]], kind: str
    ) -> Awaitable[None] | None:
        """Send the frame `build(event)`, encoded and framed once per worker (see LocalEvent).

        On the fast path it is written at once and this returns None; without
        one, it returns the ASGI send to await. A socket already closing
        drops it (see `realtime.adapter.wire`).
        """
        write = self._write
        if write is None:
            return self.send_encoded(event.encoded(build))
        if not self.closed:
            frame = event.frame
            if frame is None:
                frame = event.frame = wire.text_frame(event.encoded(build))
            write(frame)
            observe.frame_written_direct(self.endpoint, kind)  # metrics
        return None

    # --- the queue -----------------------------------------------------------------------
    async def _drain_later(self) -> None:
        async with self._serial:
            self._in_serial = True
            try:
                await self._drain_pending()
            finally:
                self._in_serial = False

    def _queue(self, event: LocalEvent) -> None:
        if not self._pending:
            self._pending = deque()
        self._pending.append(event)

    async def _drain_pending(self) -> None:
        while self._pending and not self.closed:
            event = self._pending.popleft()
            await self._run(self._handle_queued, event)

    async def _handle_queued(self, event: LocalEvent) -> None:
        pending = self._event_handler(event)(event)
        if pending is not None:
            await pending

    def _event_handler(self, event: LocalEvent) -> Callable[[LocalEvent], Awaitable[None] | None]:
        # Event types are ours ("push.x" → push_x), never a client's. The user
        # group carries events for every endpoint; those this one has no
        # handler for (a notification, on a chat socket) are not for it.
        return getattr(self, _handler_name(event["type"]), _ignore)


def _ignore(event: LocalEvent) -> None:
    return None


@functools.cache
def _handler_name(event_type: str) -> str:
    # "push.message" → "push_message"; computed once per event type, not per delivery.
    return event_type.replace(".", "_")
