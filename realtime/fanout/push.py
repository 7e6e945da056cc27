"""Sending events to sockets, always after the writing transaction commits.

Services call `push_after_commit` (or `push_each_after_commit`, for one event
to many groups); nothing else in the project talks to the channel layer for
pushes. A rolled-back transaction pushes nothing. A push that fails (Redis
down) is logged and dropped: the data is already committed, and clients
recover it with `resume`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

from realtime import adapter
from realtime.fanout.events import batch_envelope, envelope, for_group
from realtime.operations import metrics, observe
from realtime.operations.errors import UNAVAILABLE_ERRORS
from realtime.protocol import COMMITTED_AT, broadcast_group

logger = logging.getLogger("realtime.push")

Message = tuple[str, dict[str, Any]]  # (group name, channel-layer event)
Outgoing = tuple[str, dict[str, Any]]  # (group name, what goes to the layer: an envelope)
Recipient = tuple[str, dict[str, Any]]  # (group name, the fields of the event that are its own)

# Enough group_sends in flight to hide Redis round trips, few enough not to
# exhaust the connection pool.
_CONCURRENCY = 64
# One event for more groups than this goes to every worker in batches (one
# channel-layer message per BATCH_SIZE groups) instead of one message per
# group. Below it, per-group messages reach only the workers concerned.
BATCH_MIN_GROUPS = 16
# Bounds a batch message (about 50 bytes per group plus the shared event) and
# the time a hub spends on one message before it reads the next.
BATCH_SIZE = 1000


def push_after_commit(messages: Iterable[Message], *, using: str | None = None) -> None:
    """Send each (group, event) once the current transaction commits."""
    batch = list(messages)
    if batch:
        transaction.on_commit(partial(send_now, batch), using=using, robust=True)


def push_each_after_commit(
    event: dict[str, Any], recipients: Iterable[Recipient], *, using: str | None = None
) -> None:
    """Send `event`, with each group's own fields (see `realtime.fanout.events.for_group`), after commit.

    Many groups: one channel-layer message per BATCH_SIZE of them, to the
    broadcast group, which every worker's hub reads; the shared part of the
    event travels once per batch. Few: one message per group, as
    `push_after_commit`. Either way each group's sockets get the same event.
    """
    groups = list(recipients)
    if len(groups) <= BATCH_MIN_GROUPS:
        push_after_commit(((group, for_group(event, fields)) for group, fields in groups), using=using)
        return
    batches = [groups[i : i + BATCH_SIZE] for i in range(0, len(groups), BATCH_SIZE)]
    transaction.on_commit(partial(send_batches_now, event, batches), using=using, robust=True)


def send_now(messages: Sequence[Message]) -> bool:
    """Send from sync code; True when every message reached the channel layer."""
    # Called at commit: the stamp is the start of the push latency metric.
    committed = time.time()
    return _send([(group, envelope(group, {**event, COMMITTED_AT: committed})) for group, event in messages])


def send_batches_now(event: dict[str, Any], batches: Sequence[list[Recipient]]) -> bool:
    """`send_now` for batches: one message per batch to every hub."""
    stamped = {**event, COMMITTED_AT: time.time()}
    group = broadcast_group()
    return _send([(group, batch_envelope(stamped, batch)) for batch in batches])


def _send(messages: Sequence[Outgoing]) -> bool:
    """Send enveloped messages from sync code.

    Inside a server (a socket's database call, an HTTP view) the messages go to
    the server's event loop, in order, and this returns at once: the database
    thread does not wait for Redis, nor for its turn on a loop busy with other
    sockets. Its True then means "handed over"; a failure is logged (and
    counted) by the loop. Elsewhere (commands, scripts) it waits, and True means
    every message reached the channel layer.
    """
    loop = adapter.server_loop()
    if loop is not None:
        _outbox(loop).hand_over(messages)
        return True
    try:
        with metrics.PUSH_SEND.time():
            if _in_process_layer():
                async_to_sync(asend)(messages)
            else:
                asyncio.run_coroutine_threadsafe(asend(messages), _background_loop()).result(
                    timeout=_SEND_TIMEOUT_SECONDS
                )
    except Exception as exc:
        _failed(exc, len(messages))
        return False
    return True


def _failed(exc: BaseException, count: int) -> None:
    observe.layer_failure("push")
    if isinstance(exc, UNAVAILABLE_ERRORS):
        logger.warning("push failed: channel layer unavailable (%d messages)", count)
    else:
        logger.error("push failed (%d messages)", count, exc_info=exc)


class _Outbox:
    """Pushes handed over by other threads, sent by one task on the server's loop in arrival order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Sequence[Outgoing]] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    def hand_over(self, messages: Sequence[Outgoing]) -> None:
        self.loop.call_soon_threadsafe(self._put, messages)

    def _put(self, messages: Sequence[Outgoing]) -> None:
        self.queue.put_nowait(messages)
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        while not self.queue.empty():
            # Whatever has queued up meanwhile goes out together (still in order).
            batch = [self.queue.get_nowait()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            outgoing = [message for messages in batch for message in messages]
            try:
                with metrics.PUSH_SEND.time():
                    await asend(outgoing)
            except Exception as exc:
                _failed(exc, len(outgoing))


_outboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Outbox] = weakref.WeakKeyDictionary()
_outbox_lock = threading.Lock()


def _outbox(loop: asyncio.AbstractEventLoop) -> _Outbox:
    with _outbox_lock:
        outbox = _outboxes.get(loop)
        if outbox is None:
            outbox = _outboxes[loop] = _Outbox(loop)
        return outbox


def _in_process_layer() -> bool:
    # Its queues belong to the loops that read them: never touch them from another thread.
    return isinstance(get_channel_layer(), InMemoryChannelLayer)


_background: asyncio.AbstractEventLoop | None = None
_background_lock = threading.Lock()
_SEND_TIMEOUT_SECONDS = 30.0


def _background_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process for pushes from plain sync code (commands, scripts).

    `async_to_sync` outside a server makes a new event loop per call, and with
    it a new Redis connection pool: about 10 ms per push. This loop, and its
    connections, live as long as the process.
    """
    global _background
    with _background_lock:
        if _background is None or _background.is_closed():
            _background = asyncio.new_event_loop()
            threading.Thread(target=_background.run_forever, name="relay-push", daemon=True).start()
        return _background


async def asend(messages: Sequence[Outgoing]) -> None:
    """Send enveloped messages, many at a time."""
    layer = get_channel_layer()
    if len(messages) == 1:
        await layer.group_send(*messages[0])
        return
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def one(group: str, message: dict[str, Any]) -> None:
        async with gate:
            await layer.group_send(group, message)

    await asyncio.gather(*(one(group, message) for group, message in messages))


async def publish(group: str, event: dict[str, Any]) -> None:
    """Send an event that belongs to no transaction (typing, presence) right away."""
    await get_channel_layer().group_send(group, envelope(group, event))


def publish_now(group: str, event: dict[str, Any]) -> bool:
    """`publish` from sync code (an HTTP view); True when it reached the channel layer."""
    return _send([(group, envelope(group, event))])
