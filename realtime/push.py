"""Sending events to sockets, always after the writing transaction commits.

Services call `push_after_commit`; nothing else in the project talks to the
channel layer for pushes. A rolled-back transaction pushes nothing. A push
that fails (Redis down) is logged and dropped: the data is already committed,
and clients recover it with `resume`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction

from realtime import metrics, observe
from realtime.errors import UNAVAILABLE_ERRORS
from realtime.hub import envelope

logger = logging.getLogger("realtime.push")

Message = tuple[str, dict[str, Any]]  # (group name, channel-layer event)

# Enough group_sends in flight to hide Redis round trips, few enough not to
# exhaust the connection pool.
_CONCURRENCY = 64


def push_after_commit(messages: Iterable[Message], *, using: str | None = None) -> None:
    """Send each (group, event) once the current transaction commits."""
    batch = list(messages)
    if batch:
        transaction.on_commit(partial(send_now, batch), using=using, robust=True)


def send_now(messages: Sequence[Message]) -> bool:
    """Send from sync code; True when every message reached the channel layer."""
    # Called at commit: the stamp is the start of the push latency metric.
    messages = [(group, {**event, observe.COMMITTED_AT: time.time()}) for group, event in messages]
    try:
        with metrics.PUSH_SEND.time():
            if _server_loop() is not None or _in_process_layer():
                async_to_sync(asend)(messages)
            else:
                asyncio.run_coroutine_threadsafe(asend(messages), _background_loop()).result(
                    timeout=_SEND_TIMEOUT_SECONDS
                )
    except UNAVAILABLE_ERRORS:
        observe.layer_failure("push")
        logger.warning("push failed: channel layer unavailable (%d messages)", len(messages))
        return False
    except Exception:
        observe.layer_failure("push")
        logger.exception("push failed (%d messages)", len(messages))
        return False
    return True


def _server_loop() -> asyncio.AbstractEventLoop | None:
    """The server's event loop, when this sync code runs inside `sync_to_async`."""
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    same_process = getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) == os.getpid()
    return loop if loop is not None and same_process and loop.is_running() else None


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


async def asend(messages: Sequence[Message]) -> None:
    layer = get_channel_layer()
    if len(messages) == 1:
        group, event = messages[0]
        await layer.group_send(group, envelope(group, event))
        return
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def one(group: str, event: dict[str, Any]) -> None:
        async with gate:
            await layer.group_send(group, envelope(group, event))

    await asyncio.gather(*(one(group, event) for group, event in messages))


async def publish(group: str, event: dict[str, Any]) -> None:
    """Send an event that belongs to no transaction (typing, presence) right away."""
    await get_channel_layer().group_send(group, envelope(group, event))
