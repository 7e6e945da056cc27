"""One socket's way out for topic values: written at once, or conflated when the client reads slowly.

A value is written straight to the connection (the worker's shared frame,
`Value.update_frame`) while the connection holds less than
`LIVE_BUFFER_BYTES` the client has not taken (and the frame fits under the
slow-client cut-off, `WS_MAX_BUFFER_BYTES`). Past that, the outbox keeps
only the newest value of each topic, replacing an older pending one in its
place, and writes them as the client catches up (looked at every
`LIVE_FLUSH_POLL_MS` while anything is pending). So what the worker holds for
a socket is bounded: the buffer bound plus one frame, and one value per
topic. A slow socket is never cut off on this endpoint, and it never gets an
older value after a newer one: values are ordered by (epoch, seq) per topic
and anything not newer than what the socket has, or is about to get, is dropped.

Values written in one turn of the event loop (the hub hands over a round
of publishes at a time) leave a socket in one write: the first one corks
its writer and the end of the turn uncorks every corked writer, so a socket
following many topics costs one system call per round rather than one per
value. Bytes corked this turn count as unread for the bounds above.

A topic's first frame on a socket is `subscribed`: values that arrive while
its snapshot is read from Redis are held, and the snapshot goes out as the
newest of itself and them.

Servers without a pre-framed writer (`realtime.adapter.writer_for`) get the
same per-topic conflation through ASGI sends, one at a time: the send then
waits when the server applies back-pressure (uvicorn) and never does under
plain daphne, whose own buffer is then the only bound (as for every endpoint).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING

from django.conf import settings
from prometheus_client import Counter, Gauge

from live.store import Value
from realtime.adapter import wire
from realtime.operations import observe
from realtime.protocol import ServerFrame

if TYPE_CHECKING:
    from realtime.consumers import RealtimeConsumer
    from realtime.fanout.events import LocalEvent

logger = logging.getLogger("live.outbox")

CONFLATED = Counter(
    "relay_live_conflated_total", "Topic values a slow socket skipped: a newer one replaced them unsent"
)
BUFFERED = Gauge(
    "relay_live_buffered_bytes",
    "Bytes this worker holds for its live sockets: unsent on their connections, and values waiting",
)
# Every open outbox of this process, for the gauge (read at scrape time, from the metrics thread).
_open: set[Outbox] = set()


def _buffered_bytes() -> float:
    return float(sum(outbox.held_bytes() for outbox in list(_open)))


BUFFERED.set_function(_buffered_bytes)


# Per event loop: the outboxes whose writers are corked until the end of this turn.
_corked: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Outbox]] = weakref.WeakKeyDictionary()


def _uncork_all(loop: asyncio.AbstractEventLoop) -> None:
    for outbox in _corked.pop(loop, ()):
        outbox.uncork()


def send_corked() -> None:
    """Send now what this loop's outboxes corked, as the end of the turn would."""
    _uncork_all(asyncio.get_running_loop())


class Outbox:
    def __init__(self, consumer: RealtimeConsumer) -> None:
        self.consumer = consumer
        self.writer = consumer.writer
        self.topics: set[str] = set()
        self.last: dict[str, Value] = {}  # the newest value written, per topic
        self.awaiting: set[str] = set()  # topics whose `subscribed` has not been written
        self.held: dict[str, Value | None] = {}  # topics whose snapshot is being read
        self.pending: dict[str, Value] = {}  # the newest unwritten value, per topic
        self._flusher: asyncio.Task | None = None
        self._corked_bytes: int | None = None  # written this turn, not yet sent; None: not corked
        _open.add(self)

    # --- subscriptions ------------------------------------------------------------------
    def subscribing(self, topic: str) -> None:
        """`topic` is being subscribed (again): its next frame is a `subscribed`, after its snapshot."""
        self.topics.add(topic)
        self.awaiting.add(topic)
        self.held[topic] = self.pending.pop(topic, None)

    def snapshot(self, value: Value) -> None:
        """The value read for a topic being subscribed: it goes out with the next `flush`."""
        topic = value.topic
        if topic not in self.held:
            return  # unsubscribed meanwhile
        for other in (self.held.pop(topic), self.last.get(topic)):
            if other is not None and other.newer_than(value):
                value = other
        self.pending[topic] = value

    def unsubscribe(self, topic: str) -> None:
        self.topics.discard(topic)
        self.awaiting.discard(topic)
        self.held.pop(topic, None)
        self.pending.pop(topic, None)
        self.last.pop(topic, None)

    # --- values -------------------------------------------------------------------------
    def offer(self, value: Value) -> None:
        """A new value of a topic (from the worker's feed): write it now, or keep it as the newest pending."""
        topic = value.topic
        if topic not in self.topics:
            return
        if topic in self.held:
            if value.newer_than(self.held[topic]):
                self.held[topic] = value
            return
        waiting = self.pending.get(topic)
        if not value.newer_than(waiting or self.last.get(topic)):
            return
        if not self.pending and self._room(value):
            self._write(topic, value)
            return
        if waiting is not None:
            CONFLATED.inc()
        self.pending[topic] = value
        self._schedule()

    async def flush(self) -> None:
        """Write what is pending while the connection has room; the rest when the client reads.

        Without a writer, what is pending is sent now, one ASGI send at a time.
        """
        if self.writer is not None:
            self._write_while_room()
        else:
            await self._send_pending()
        if self.pending:
            self._schedule()

    def lost(self) -> None:
        self.consumer.hub_lost()

    async def recheck(self, event: LocalEvent) -> None:
        """Hand the socket a re-check of its subscriptions (`Event.TOPIC_RECHECK`), between its frames."""
        pending = self.consumer.hub_deliver(event)
        if pending is not None:
            await pending

    def close(self) -> None:
        _open.discard(self)
        if self._flusher is not None:
            self._flusher.cancel()
        self.topics.clear()
        self.held.clear()
        self.pending.clear()
        self.last.clear()

    def held_bytes(self) -> int:
        """What the worker holds for this socket now: unsent bytes on the connection, values waiting."""
        waiting = sum(value.size() for value in list(self.pending.values()))
        waiting += sum(value.size() for value in list(self.held.values()) if value is not None)
        return waiting + self._unread()

    def _unread(self) -> int:
        """Bytes written to the connection that the client has not taken, corked ones included."""
        if self.writer is None:
            return 0
        return self.writer.buffered() + (self._corked_bytes or 0)

    # --- writing ------------------------------------------------------------------------
    def _room(self, value: Value) -> bool:
        """Whether `value` may be written now: the client has read enough, and the frame will not
        take the connection past the slow-client cut-off (unless nothing else is unread)."""
        if self.writer is None:
            return False
        buffered = self._unread()
        if buffered >= settings.LIVE_BUFFER_BYTES:
            return False
        return not buffered or buffered + value.size() <= settings.WS_MAX_BUFFER_BYTES

    def _frame_kind(self, topic: str, value: Value) -> ServerFrame:
        self.last[topic] = value
        if topic in self.awaiting:
            self.awaiting.discard(topic)
            return ServerFrame.SUBSCRIBED
        return ServerFrame.UPDATE

    def _write(self, topic: str, value: Value) -> None:
        if self.consumer.closed:
            return
        kind = self._frame_kind(topic, value)
        frame = value.update_frame() if kind == ServerFrame.UPDATE else wire.text_frame(value.text(kind))
        if self._corked_bytes is None:
            self._cork()
        self._corked_bytes += len(frame)
        self.writer(frame)
        observe.frame_written_direct(self.consumer.endpoint, kind)  # metrics

    def _write_while_room(self) -> None:
        while self.pending:
            topic = next(iter(self.pending))
            if not self._room(self.pending[topic]):
                return
            self._write(topic, self.pending.pop(topic))

    async def _send_pending(self) -> None:
        while self.pending and not self.consumer.closed:
            topic = next(iter(self.pending))
            value = self.pending.pop(topic)
            await self.consumer.send_encoded(value.text(self._frame_kind(topic, value)))

    def _cork(self) -> None:
        loop = asyncio.get_running_loop()
        batch = _corked.get(loop)
        if batch is None:
            batch = _corked[loop] = []
            loop.call_soon(_uncork_all, loop)
        batch.append(self)
        self._corked_bytes = 0
        self.writer.cork()

    def uncork(self) -> None:
        """Send what this turn corked, in one write (the writer drops it if the socket closed)."""
        if self._corked_bytes is not None:
            self._corked_bytes = None
            self.writer.uncork()

    def _schedule(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self) -> None:
        try:
            while self.pending and not self.consumer.closed:
                if self.writer is None:
                    await self._send_pending()
                    continue
                self._write_while_room()
                if self.pending:
                    # Polled rather than woken by the server's flow control, which
                    # every server exposes differently; only sockets that are behind pay it.
                    await asyncio.sleep(settings.LIVE_FLUSH_POLL_MS / 1000)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("live: writing to a socket failed")
