"""Who is online in a group (a chat room), correct across worker processes.

Each socket is an entry `<socket id>|<username>` whose score is the time
it expires. A socket refreshes its entry every `PRESENCE_HEARTBEAT_SECONDS`;
an entry not refreshed for `PRESENCE_TTL_SECONDS` is stale, so the users of a
worker that died without running its disconnect handlers drop out of the
online list once their entries expire, and out of every other socket's view at
the next join, leave or heartbeat in that room.

Every operation is atomic and reports the users it took from offline to
online (`joined`) and from online to offline (`left`), comparing the set of
users before and after it, stale entries included: each transition is
reported exactly once, by whichever operation saw it. A user with several
sockets is online while any of them is, so `joined` fires on the first
socket in and `left` on the last socket out (or when the last one expires).

The backend is chosen by `settings.PRESENCE_BACKEND` (a dotted path), like
Django's message storages: `RedisPresence` (sorted sets, shared by every
process) when `REDIS_URL` is set, `MemoryPresence` (this process only)
otherwise. Keys are namespaced by `PRESENCE_KEY_PREFIX`.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

JOIN = "join"
BEAT = "beat"
LEAVE = "leave"
READ = "read"


@dataclass(frozen=True)
class Change:
    online: list[str]
    joined: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    # Grows with every operation on the group. Presence events travel apart
    # from the welcome and from each other, so a socket keeps only news newer
    # than what it already showed (a socket that just joined may otherwise
    # hear an announcement made just before it).
    version: int = 0


def _member(socket: str, user: str) -> str:
    # Socket ids ("socket.<hex>", RealtimeConsumer.socket_id) never contain "|";
    # usernames may, which is why _user splits at the first one.
    return f"{socket}|{user}"


def _user(member: str | bytes) -> str:
    if isinstance(member, bytes):
        member = member.decode()
    return member.split("|", 1)[1]


def _change(before: list, after: list, version: int) -> Change:
    was = {_user(m) for m in before}
    now = {_user(m) for m in after}
    return Change(online=sorted(now), joined=sorted(now - was), left=sorted(was - now), version=version)


# What a heartbeat that changed nobody's status reports: nothing to announce.
_UNCHANGED = Change(online=[])


class PresenceBackend:
    def key(self, group: str) -> str:
        return f"{settings.PRESENCE_KEY_PREFIX}:{group}"

    async def join(self, group: str, *, socket: str, user: str) -> Change:
        return await self._apply(JOIN, group, socket, user)

    async def heartbeat(self, group: str, *, socket: str, user: str) -> Change:
        """Refresh this socket's entry (re-adding it if it had expired).

        When nobody's status changed the answer may leave `online` empty
        (the Redis backend does, to keep heartbeats cheap in big rooms).
        """
        return await self._apply(BEAT, group, socket, user)

    async def leave(self, group: str, *, socket: str, user: str) -> Change:
        return await self._apply(LEAVE, group, socket, user)

    async def online(self, group: str) -> list[str]:
        return (await self._apply(READ, group, "", "")).online

    async def _apply(self, op: str, group: str, socket: str, user: str) -> Change:
        raise NotImplementedError


class MemoryPresence(PresenceBackend):
    """One process only: for development and tests without Redis."""

    def __init__(self) -> None:
        self._groups: dict[str, dict[str, float]] = {}
        self._versions: dict[str, int] = {}

    async def _apply(self, op: str, group: str, socket: str, user: str) -> Change:
        # No await inside: atomic with respect to the event loop.
        key = self.key(group)
        entries = self._groups.setdefault(key, {})
        before = list(entries)
        now = time.monotonic()
        for member, expires in list(entries.items()):
            if expires <= now:
                del entries[member]
        if op in (JOIN, BEAT):
            entries[_member(socket, user)] = now + settings.PRESENCE_TTL_SECONDS
        elif op == LEAVE:
            entries.pop(_member(socket, user), None)
        if not entries:
            self._groups.pop(key, None)
        version = self._versions[key] = self._versions.get(key, 0) + 1
        return _change(before, list(entries), version)


# KEYS[1]: the group's sorted set; KEYS[2]: its version counter. ARGV: op, member, ttl seconds.
# Scores are expiry times from Redis' own clock, so workers' clocks do not matter.
# A heartbeat that refreshes a live entry while nothing has expired changes no
# one's status: it answers an empty table instead of the room's whole list, so a
# big room's heartbeats cost O(log n) each, not two lists of n names per socket.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if ARGV[1] == 'beat' and redis.call('ZSCORE', KEYS[1], ARGV[2])
   and redis.call('ZCOUNT', KEYS[1], '-inf', now) == 0 then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 2))
  return {}
end
local before = redis.call('ZRANGE', KEYS[1], 0, -1)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ttl = tonumber(ARGV[3])
if ARGV[1] == 'join' or ARGV[1] == 'beat' then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
elseif ARGV[1] == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[2])
end
local after = redis.call('ZRANGE', KEYS[1], 0, -1)
if #after > 0 and ARGV[1] ~= 'read' then
  redis.call('EXPIRE', KEYS[1], math.ceil(ttl * 2))
end
local version = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 86400)
return {before, after, version}
"""


# Connections per worker for presence; more operations than this wait their turn.
_POOL_SIZE = 64


class RedisPresence(PresenceBackend):
    """Sorted sets in Redis (`REDIS_URL`), shared by every worker process."""

    def __init__(self) -> None:
        # redis.asyncio clients belong to the event loop that made them.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def client(self):
        from redis.asyncio import BlockingConnectionPool, Redis

        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            # A pool that makes callers wait for a free connection: redis-py's
            # default raises past 100, which lost presence leaves when a
            # thousand sockets closed at once (found by bench/soak.py).
            pool = BlockingConnectionPool.from_url(
                settings.REDIS_URL, max_connections=_POOL_SIZE, timeout=settings.PRESENCE_TTL_SECONDS
            )
            redis = Redis(connection_pool=pool)
            entry = (redis, redis.register_script(_SCRIPT))
            self._clients[loop] = entry
        return entry

    async def _apply(self, op: str, group: str, socket: str, user: str) -> Change:
        _redis, script = self.client()
        ttl = settings.PRESENCE_TTL_SECONDS
        key = self.key(group)
        answer = await script(keys=[key, f"{key}:v"], args=[op, _member(socket, user), ttl])
        if not answer:
            return _UNCHANGED  # a heartbeat that changed nobody's status
        before, after, version = answer
        return _change(before, after, int(version))

    async def aclose(self) -> None:
        """Close this event loop's connection (tests; workers keep theirs)."""
        loop = asyncio.get_running_loop()
        entry = self._clients.pop(loop, None)
        if entry is not None:
            await entry[0].aclose(close_connection_pool=True)


@cache
def _backend(path: str) -> PresenceBackend:
    return import_string(path)()


def get_presence() -> PresenceBackend:
    return _backend(settings.PRESENCE_BACKEND)
