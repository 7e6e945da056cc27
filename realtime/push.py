"""Sending events to sockets, always after the writing transaction commits.

Services call `push_after_commit`; nothing else in the project talks to the
channel layer for pushes. A rolled-back transaction pushes nothing. A push
that fails (Redis down) is logged and dropped: the data is already committed,
and clients recover it with `resume`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
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
            async_to_sync(asend)(messages)
    except UNAVAILABLE_ERRORS:
        observe.layer_failure("push")
        logger.warning("push failed: channel layer unavailable (%d messages)", len(messages))
        return False
    except Exception:
        observe.layer_failure("push")
        logger.exception("push failed (%d messages)", len(messages))
        return False
    return True


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
