"""The online set of each chat room in Redis, shared by every worker process.

Owns the one Lua script every operation runs (atomic, and sweeping expired
entries the same way each time), the room's four keys, and this worker's
connections to them. Why an operation's cost does not grow with the room: see
chat/presence/__init__.py.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

from django.conf import settings

from chat.presence.store import Outcome, PresenceStore, entry_lifetime
from realtime import redis_client

# Expired entries removed by one call: a join or a leave stays cheap whatever a
# dead worker left behind; a heartbeat or a read takes the rest.
_SWEEP_ON_JOIN = 100
_SWEEP_ON_REFRESH = 10_000


def _keys_lifetime() -> int:
    # A room nobody has touched for this long has no live entry left.
    return max(3600, int(settings.PRESENCE_TTL_SECONDS * 2) + 1)


# One script for every operation, so each is atomic and sweeps the same way.
# KEYS: the room's entries (sorted set: entry -> expiry, Redis' clock), counts
# (hash: user -> entries), users (sorted set, all scores 0: ordered by name for
# paging) and version (a counter). ARGV: op, entry lifetime, keys' lifetime, sweep
# limit, then per op: join FIRST ENTRY... | leave ENTRY... | refresh ENTRY... | page AFTER LIMIT.
# The version starts at Redis' clock in microseconds, so it keeps growing even
# when the keys expire or Redis restarts and a worker still remembers old numbers.
# Reply: {users online, version, {user, 1|0, version, ...}, {names}}.
_SCRIPT = """
local E, C, U, V = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local op, life, keep, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local changes = {}

local function changed(user, online)
  if redis.call('EXISTS', V) == 0 then
    redis.call('SET', V, string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2])))
  end
  changes[#changes + 1] = user
  changes[#changes + 1] = online
  changes[#changes + 1] = redis.call('INCR', V)
end
local function user_of(entry)
  return string.sub(entry, string.find(entry, '|', 1, true) + 1)
end
local function add(entry)
  if redis.call('ZADD', E, now + life, entry) == 1 then
    local user = user_of(entry)
    if redis.call('HINCRBY', C, user, 1) == 1 then
      redis.call('ZADD', U, 0, user)
      changed(user, 1)
    end
  end
end
local function remove(entry)
  if redis.call('ZREM', E, entry) == 1 then
    local user = user_of(entry)
    if redis.call('HINCRBY', C, user, -1) <= 0 then
      redis.call('HDEL', C, user)
      redis.call('ZREM', U, user)
      changed(user, 0)
    end
  end
end

if op == 'join' then
  for i = 6, #ARGV do add(ARGV[i]) end
elseif op == 'leave' then
  for i = 5, #ARGV do remove(ARGV[i]) end
elseif op == 'refresh' then
  for i = 5, #ARGV do add(ARGV[i]) end
end
-- Entries nobody refreshed: their worker died.
for _, entry in ipairs(redis.call('ZRANGEBYSCORE', E, '-inf', now, 'LIMIT', 0, limit)) do
  remove(entry)
end
if op ~= 'page' then
  for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, keep) end
end
local names = {}
if op == 'join' then
  names = redis.call('ZRANGE', U, 0, tonumber(ARGV[5]) - 1)
elseif op == 'page' then
  local from = '-'
  if ARGV[5] ~= '' then from = '(' .. ARGV[5] end
  names = redis.call('ZRANGEBYLEX', U, from, '+', 'LIMIT', 0, tonumber(ARGV[6]))
end
return {redis.call('ZCARD', U), tonumber(redis.call('GET', V) or '0'), changes, names}
"""


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _outcome(reply: list[Any]) -> Outcome:
    count, version, flat, names = reply
    changes = [(_text(flat[i]), bool(int(flat[i + 1])), int(flat[i + 2])) for i in range(0, len(flat), 3)]
    return Outcome(changes=changes, count=int(count), version=int(version), names=[_text(n) for n in names])


# Connections per worker for presence; more operations than this wait their turn.
_POOL_SIZE = 64


class RedisPresence(PresenceStore):
    """Redis (`REDIS_URL` or Sentinel), shared by every worker process; Redis' clock for expiry."""

    def __init__(self) -> None:
        # redis.asyncio clients belong to the event loop that made them.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._sync: Any = None
        self._sync_lock = threading.Lock()

    def _script(self):
        loop = asyncio.get_running_loop()
        script = self._clients.get(loop)
        if script is None:
            # A pool that makes callers wait for a free connection: redis-py's
            # default raises past 100, which lost leaves when a thousand sockets
            # closed at once (found by bench/soak.py).
            client = redis_client.async_client(
                max_connections=_POOL_SIZE, wait_seconds=settings.PRESENCE_TTL_SECONDS
            )
            script = self._clients[loop] = client.register_script(_SCRIPT)
        return script

    def _sync_script(self):
        with self._sync_lock:
            if self._sync is None:
                self._sync = redis_client.sync_client().register_script(_SCRIPT)
            return self._sync

    def _keys(self, room: str) -> list[str]:
        base = self.key(room)
        return [f"{base}:e", f"{base}:c", f"{base}:u", f"{base}:v"]

    def _args(self, op: str, sweep: int, *rest: object) -> list[object]:
        return [op, entry_lifetime(), _keys_lifetime(), sweep, *rest]

    async def join(self, room: str, *, entries: list[str], first: int) -> Outcome:
        args = self._args("join", _SWEEP_ON_JOIN, first, *entries)
        return _outcome(await self._script()(keys=self._keys(room), args=args))

    async def leave(self, room: str, *, entries: list[str]) -> Outcome:
        args = self._args("leave", _SWEEP_ON_JOIN, *entries)
        return _outcome(await self._script()(keys=self._keys(room), args=args))

    async def refresh(self, room: str, *, entries: list[str]) -> Outcome:
        args = self._args("refresh", _SWEEP_ON_REFRESH, *entries)
        return _outcome(await self._script()(keys=self._keys(room), args=args))

    def page(self, room: str, *, after: str | None, limit: int) -> Outcome:
        args = self._args("page", _SWEEP_ON_REFRESH, after or "", limit)
        return _outcome(self._sync_script()(keys=self._keys(room), args=args))

    async def aclose(self) -> None:
        """Close this event loop's connections (tests; workers keep theirs)."""
        script = self._clients.pop(asyncio.get_running_loop(), None)
        if script is not None:
            await script.registered_client.aclose(close_connection_pool=True)
