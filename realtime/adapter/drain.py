"""Graceful drain: the open sockets of this process, and closing them with 1012.

Consumers `register` when they accept a socket and `unregister` when it goes
away (a WeakSet, so a consumer that dies without disconnecting is not kept).
On SIGTERM `realtime.serve` calls `drain()`: from then on `register` refuses
new sockets (they are closed with 1012 at once), `/readyz` answers 503, and
after `DRAIN_GRACE_SECONDS` every open socket is closed with 1012 "server
restarting", which tells the JavaScript client to reconnect soon, with jitter,
to another worker.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from realtime.operations import metrics
from realtime.operations.logs import log_event
from realtime.protocol import CloseCode

logger = logging.getLogger("realtime.drain")

_open: weakref.WeakSet = weakref.WeakSet()
_draining = False
_emptied: asyncio.Event | None = None  # set when the last socket goes, during a drain


def draining() -> bool:
    return _draining


def register(consumer) -> bool:
    """Track an accepted socket; False when this worker is draining."""
    if _draining:
        return False
    _open.add(consumer)
    return True


def unregister(consumer) -> None:
    _open.discard(consumer)
    if not _open and _emptied is not None:
        _emptied.set()


def open_count() -> int:
    return len(_open)


async def _until_empty(seconds: float) -> None:
    """Return when no socket is open, or after `seconds`."""
    global _emptied
    if not _open:
        return
    _emptied = asyncio.Event()
    try:
        await asyncio.wait_for(_emptied.wait(), seconds)
    except TimeoutError:
        pass
    finally:
        _emptied = None


async def drain(*, grace: float, close_timeout: float) -> int:
    """Refuse new sockets, wait `grace`, close the rest with 1012; returns how many were closed."""
    global _draining
    _draining = True
    metrics.DRAINING.set(1)
    log_event(logger, "drain_start", open=len(_open), grace=grace)
    await _until_empty(grace)
    sockets = list(_open)
    for consumer in sockets:
        try:
            await consumer.close_with(CloseCode.RESTARTING, "server_restarting")
        except Exception:
            logger.warning("drain: closing a socket failed", exc_info=True)
    # Wait for the clients' close replies, so they see 1012 rather than a cut connection.
    await _until_empty(close_timeout)
    log_event(logger, "drain_done", closed=len(sockets), unanswered=len(_open))
    return len(sockets)


def reset() -> None:
    """For tests: forget a drain."""
    global _draining
    _draining = False
    _open.clear()
    metrics.DRAINING.set(0)
