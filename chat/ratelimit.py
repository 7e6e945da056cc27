"""Chat rate limits: a token bucket per user per room, and the abuse meter.

The bucket is GCRA from throttled-py (the generic cell rate algorithm, which
is a token bucket: `CHAT_RATE_BURST` messages at once, refilled at
`CHAT_RATE_PER_SECOND`). With Redis (`REDIS_URL` or Sentinel) its state is
one Redis key per user and room, in the deployment's namespace, updated by a
Lua script with Redis' clock, so every worker shares it; otherwise it lives in
this process.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from datetime import timedelta
from typing import Any

from django.conf import settings
from throttled.asyncio import Throttled, rate_limiter, store
from throttled.exceptions import StoreUnavailableError
from throttled.store import ConnectionFactory

from realtime import redis_client
from realtime.operations.errors import UNAVAILABLE_ERRORS

# throttled-py takes a rate as an integer count per whole-second period;
# over 1000 s, any configured rate down to 0.001/s is exact to 0.001/s.
_PERIOD_SECONDS = 1000

# Limiters belong to the event loop whose Redis connections they hold.
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, Throttled]] = (
    weakref.WeakKeyDictionary()
)


class RedisConnections(ConnectionFactory):
    """throttled-py's `CONNECTION_FACTORY_CLASS`: its Redis store gets our client.

    So the limiter reaches Redis as everything else does (URL or Sentinel,
    timeouts, retry): see realtime/redis_client.py.
    """

    def connect(self, url: str | None = None) -> Any:
        return redis_client.async_client()


def _limiter() -> Throttled:
    rate, burst, prefix = (
        settings.CHAT_RATE_PER_SECOND,
        settings.CHAT_RATE_BURST,
        redis_client.namespaced(settings.CHAT_RATE_KEY_PREFIX),
    )
    per_loop = _limiters.setdefault(asyncio.get_running_loop(), {})
    using_redis = redis_client.configured()
    key = (rate, burst, prefix, settings.REDIS_URL, tuple(settings.REDIS_SENTINELS))
    limiter = per_loop.get(key)
    if limiter is None:
        backing: Any = (
            store.RedisStore(options={"CONNECTION_FACTORY_CLASS": "chat.ratelimit.RedisConnections"})
            if using_redis
            else store.MemoryStore()
        )
        quota = rate_limiter.per_duration(
            timedelta(seconds=_PERIOD_SECONDS), limit=max(1, round(rate * _PERIOD_SECONDS)), burst=burst
        )
        # timeout=-1: answer at once, never wait for a token.
        limiter = Throttled(using="gcra", quota=quota, store=backing, key_prefix=prefix, timeout=-1)
        per_loop[key] = limiter
    return limiter


async def allow_post(*, user_id: int, room_id: int) -> bool:
    """Take one token from this user's bucket in this room; False when it is empty.

    Raises one of UNAVAILABLE_ERRORS when Redis cannot be reached.
    """
    try:
        result = await _limiter().limit(f"{user_id}:{room_id}")
    except StoreUnavailableError as exc:
        # throttled-py wraps every Redis error in its own; Redis down or
        # restarting is `unavailable` for the client, not a server bug.
        if isinstance(exc.__cause__, UNAVAILABLE_ERRORS):
            raise exc.__cause__ from None
        raise
    return not result.limited


class AbuseMeter:
    """Counts one socket's `rate_limited` answers in a sliding window."""

    def __init__(self) -> None:
        self._hits: deque[float] = deque()

    def hit(self) -> bool:
        """Record one; True when the socket has now crossed CHAT_ABUSE_LIMIT."""
        now = time.monotonic()
        window = settings.CHAT_ABUSE_WINDOW_SECONDS
        while self._hits and now - self._hits[0] > window:
            self._hits.popleft()
        self._hits.append(now)
        return len(self._hits) >= settings.CHAT_ABUSE_LIMIT
