"""Each user's open sockets, counted across endpoints and workers (contract v2).

A user may hold `WS_MAX_SOCKETS_PER_USER` authenticated sockets at once, on
`/ws/notifications/` and `/ws/chat/<slug>/` together, on every worker; a
further one is closed with 4429 `too_many_sockets` as soon as its user is
known (right after the handshake, or at its `auth` frame).

With Redis, each user has a sorted set in the deployment's namespace: one
entry per socket, scored by when it expires (Redis' clock). Taking a slot is
one script call, O(1) in commands whatever the cap: drop the user's expired
entries, refuse if the rest reach the cap, else add this socket's; the
sockets arriving together take theirs in one call (realtime.batching). Its worker
refreshes the entries of all its sockets every `WS_SOCKETS_HEARTBEAT_SECONDS`
(one call per 1,000 sockets) and they expire `WS_SOCKETS_TTL_SECONDS` after
the last refresh, so the slots of a worker that was killed come back within
the TTL. A closed socket's entry goes at once, with the next batch of
releases (one call for all the sockets that closed meanwhile). Without Redis
the count lives in this process (development: one process).
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from realtime import redis_client
from realtime.batching import Batched
from realtime.fanout.per_hub import per_hub
from realtime.operations.errors import UNAVAILABLE_ERRORS, log_unavailable

logger = logging.getLogger("realtime.socket")

# Entries refreshed or released by one call: bounds a script's run time in Redis.
_CHUNK = 1000
# Connections per worker for slots; more calls than this wait their turn.
_POOL_SIZE = 32

# KEYS: users' slots; ARGV: lifetime, then a socket id and a cap per key.
# Reply: per key, in order, 1 taken or 0 refused (a user named twice is counted in order).
_TAKE = """
local life = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local taken = {}
for i, key in ipairs(KEYS) do
  local socket, cap = ARGV[2 * i], tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if not redis.call('ZSCORE', key, socket) and redis.call('ZCARD', key) >= cap then
    taken[i] = 0
  else
    redis.call('ZADD', key, now + life, socket)
    redis.call('EXPIRE', key, math.ceil(life) + 1)
    taken[i] = 1
  end
end
return taken
"""

# KEYS: users' slots; ARGV: op ("refresh" | "release"), lifetime, then one socket id per key.
# A refresh re-adds an entry that expired (a frozen Redis, a long pause): the socket is open.
_UPDATE = """
local op, life = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i, key in ipairs(KEYS) do
  if op == 'refresh' then
    redis.call('ZADD', key, now + life, ARGV[i + 2])
    redis.call('EXPIRE', key, math.ceil(life) + 1)
  else
    redis.call('ZREM', key, ARGV[i + 2])
  end
end
return #KEYS
"""


def _key(user_id: int | str) -> str:
    return f"{redis_client.namespaced(settings.WS_SOCKETS_KEY_PREFIX)}:{user_id}"


class _Scripts:
    def __init__(self) -> None:
        client = redis_client.async_client(
            max_connections=_POOL_SIZE, wait_seconds=settings.WS_SOCKETS_TTL_SECONDS
        )
        self.client = client
        self.take = client.register_script(_TAKE)
        self.update = client.register_script(_UPDATE)


class Slots:
    """This worker's sockets' slots: one per hub (a worker has one), closed with it."""

    def __init__(self) -> None:
        self.local: dict[str, int | str] = {}  # socket id -> user id, sockets holding a slot here
        self.counts: dict[int | str, int] = {}  # user id -> sockets holding a slot here
        self._scripts: _Scripts | None = None
        self._releasing: list[tuple[str, int | str]] = []
        self._releaser: asyncio.Task | None = None
        self._beating: asyncio.Task | None = None
        self._takes = Batched(self._take_many)

    async def _take_many(self, wanted: list[tuple[int | str, str, int]]) -> list[bool]:
        """Slots for the sockets arriving together: one script call (`take` batches them)."""
        args: list[int | str] = [settings.WS_SOCKETS_TTL_SECONDS]
        for _, socket, cap in wanted:
            args += [socket, cap]
        taken = await self._redis().take(keys=[_key(user_id) for user_id, _, _ in wanted], args=args)
        return [bool(answer) for answer in taken]

    def _redis(self) -> _Scripts:
        if self._scripts is None:
            self._scripts = _Scripts()
        return self._scripts

    async def take(self, *, user_id: int | str, socket: str, cap: int | None = None) -> bool:
        """Take a slot for this socket; False when the user already holds the cap.

        `user_id` may be another holder's key with its own `cap` (live.limits: anonymous sockets by address).
        """
        cap = cap or settings.WS_MAX_SOCKETS_PER_USER
        if redis_client.configured():
            taken = await self._takes((user_id, socket, cap))
        else:
            taken = self.counts.get(user_id, 0) < cap
        if taken:
            self.local[socket] = user_id
            self.counts[user_id] = self.counts.get(user_id, 0) + 1
            self._keep_beating()
        return taken

    def release(self, *, socket: str) -> None:
        """Free the socket's slot: here at once, in Redis with the next batch."""
        user_id = self.local.pop(socket, None)
        if user_id is None:
            return
        left = self.counts[user_id] - 1
        if left:
            self.counts[user_id] = left
        else:
            del self.counts[user_id]
        if not redis_client.configured():
            return
        self._releasing.append((socket, user_id))
        if self._releaser is None or self._releaser.done():
            self._releaser = asyncio.ensure_future(self._release_pending())

    async def _release_pending(self) -> None:
        while self._releasing:
            batch, self._releasing = self._releasing[:_CHUNK], self._releasing[_CHUNK:]
            try:
                await self._update("release", batch)
            except asyncio.CancelledError:
                raise
            except UNAVAILABLE_ERRORS as exc:
                # The entries expire by themselves (WS_SOCKETS_TTL_SECONDS).
                log_unavailable(logger, exc, "socket slots: release failed sockets=%d", len(batch))
            except Exception:
                logger.exception("socket slots: release failed")

    async def _update(self, op: str, entries: list[tuple[str, int | str]]) -> None:
        keys = [_key(user_id) for _, user_id in entries]
        args = [op, settings.WS_SOCKETS_TTL_SECONDS, *(socket for socket, _ in entries)]
        await self._redis().update(keys=keys, args=args)

    def _keep_beating(self) -> None:
        if redis_client.configured() and (self._beating is None or self._beating.done()):
            self._beating = asyncio.ensure_future(self._beat())

    async def _beat(self) -> None:
        """Refresh every local socket's entry until none is left."""
        while self.local:
            await asyncio.sleep(settings.WS_SOCKETS_HEARTBEAT_SECONDS)
            entries = list(self.local.items())
            for start in range(0, len(entries), _CHUNK):
                chunk = entries[start : start + _CHUNK]
                try:
                    await self._update("refresh", chunk)
                except asyncio.CancelledError:
                    raise
                except UNAVAILABLE_ERRORS as exc:
                    # The entries expire if this lasts; the hub closes the sockets meanwhile.
                    log_unavailable(logger, exc, "socket slots: heartbeat failed")
                    continue
                except Exception:
                    logger.exception("socket slots: heartbeat failed")
                    continue
                # A socket that closed while the refresh was on its way was put
                # back by it: take it out again.
                returned = [entry for entry in chunk if entry[0] not in self.local]
                if returned:
                    self._releasing.extend(returned)
                    if self._releaser is None or self._releaser.done():
                        self._releaser = asyncio.ensure_future(self._release_pending())

    async def close(self) -> None:
        """Stop (tests end their event loop); the entries expire by themselves."""
        for task in (self._beating, self._releaser):
            if task is not None:
                task.cancel()
        if self._scripts is not None:
            await self._scripts.client.aclose(close_connection_pool=True)
            self._scripts = None


# Each user's sockets as this worker counts them, one per hub.
get_slots = per_hub(lambda hub: Slots(), close=Slots.close)
