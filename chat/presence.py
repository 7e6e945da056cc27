"""Who is online in each chat room: shared by every worker, announced in batches.

This module owns presence (contract v2, "Presence"):

- the online set of each room, held by a store chosen by `PRESENCE_BACKEND`, like
  Django's message storages: `RedisPresence` (shared by every worker) or
  `MemoryPresence` (this process only, for development without Redis);
- the changes that a join, a leave, a heartbeat or an expiry makes, each numbered by
  the room's version counter and published to the room's group as one
  `presence.changes` event;
- per worker, the batching of those changes into at most one `presence` frame per
  room every `PRESENCE_FLUSH_MS`, carrying the net `joined` and `left` since the
  previous frame (or only the count, `truncated`, past `PRESENCE_LIST_MAX` names).

What a join costs does not grow with the room. A join, a leave and a socket's share
of a heartbeat are each a constant number of Redis commands in one script call, whose
reply holds at most `PRESENCE_LIST_MAX` names (the welcome's), never the room's whole
list. Each worker handles each change once, not once per socket. What grows with the
room is only the fan-out of the batched frame, and that is one frame per member per
interval whatever the number of joins in it.

Crashes: each socket has an entry that expires `PRESENCE_TTL_SECONDS -
PRESENCE_HEARTBEAT_SECONDS` after its worker last refreshed it. Every
`PRESENCE_HEARTBEAT_SECONDS` each worker refreshes all its sockets of a room in one
call, which also removes expired entries. So the users of a worker that died are
announced as left within `PRESENCE_TTL_SECONDS` while any other worker has a socket
in the room; otherwise at the next join, leave or read of the online list.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from realtime import redis_client
from realtime.fanout.hub import Hub, get_hub
from realtime.fanout.push import publish, publish_now
from realtime.operations.errors import UNAVAILABLE_ERRORS, log_unavailable
from realtime.protocol import Event, ServerFrame

logger = logging.getLogger("chat.presence")

# (username, online after the change, the room's version at the change)
Change = tuple[str, bool, int]

# Expired entries removed by one call: a join or a leave stays cheap whatever a
# dead worker left behind; a heartbeat or a read takes the rest.
_SWEEP_ON_JOIN = 100
_SWEEP_ON_REFRESH = 10_000
# Members refreshed by one heartbeat call: bounds a script's run time in Redis.
_REFRESH_CHUNK = 1000
# The largest page of the online list over HTTP (contract: limit <= 1000).
PAGE_MAX = 1000


@dataclass(frozen=True)
class Outcome:
    """What one store operation did: the changes it made, and the room after it."""

    changes: list[Change]
    count: int  # users online after the operation
    version: int  # the room's version after it: the count is as of this version
    names: list[str] = field(default_factory=list)  # first names after `after` (join, page)


@dataclass(frozen=True)
class Snapshot:
    """What a new socket's welcome shows."""

    online: list[str]  # the first PRESENCE_LIST_MAX users online, sorted
    count: int


@dataclass(frozen=True)
class Page:
    results: list[str]
    next_after: str | None
    count: int


def member(socket: str, user: str) -> str:
    # Socket ids ("socket.<hex>", RealtimeConsumer.socket_id) never contain "|";
    # usernames may, which is why the user is whatever follows the first one.
    return f"{socket}|{user}"


def _user_of(entry: str) -> str:
    return entry.split("|", 1)[1]


def _entry_lifetime() -> float:
    # Refreshed every heartbeat, an entry outlives the next one by a heartbeat;
    # the sweep that finds it expired runs within one more (see the docstring).
    return settings.PRESENCE_TTL_SECONDS - settings.PRESENCE_HEARTBEAT_SECONDS


def _keys_lifetime() -> int:
    # A room nobody has touched for this long has no live entry left.
    return max(3600, int(settings.PRESENCE_TTL_SECONDS * 2) + 1)


# --- stores -------------------------------------------------------------------------------
class PresenceStore:
    """The online set of every room. Every operation is atomic and reports its changes.

    A user with several sockets is online while any of them is: `joined` on the
    first socket in, `left` on the last one out or expired.
    """

    def key(self, room: str) -> str:
        return f"{redis_client.namespaced(settings.PRESENCE_KEY_PREFIX)}:{room}"

    async def join(self, room: str, *, entry: str, first: int) -> Outcome:
        """Add a socket's entry; `names` are the first `first` users online after it."""
        raise NotImplementedError

    async def leave(self, room: str, *, entries: list[str]) -> Outcome:
        """Remove these entries (absent ones are passed over), and expired ones."""
        raise NotImplementedError

    async def refresh(self, room: str, *, entries: list[str]) -> Outcome:
        """Keep these entries alive (re-adding any that expired), and remove expired ones."""
        raise NotImplementedError

    def page(self, room: str, *, after: str | None, limit: int) -> Outcome:
        """Synchronous (HTTP views): up to `limit` users online after `after`, sorted."""
        raise NotImplementedError


class _MemoryRoom:
    def __init__(self) -> None:
        self.entries: dict[str, float] = {}  # entry -> expiry (monotonic seconds)
        self.counts: dict[str, int] = {}  # user -> entries
        self.users: list[str] = []  # online users, sorted
        self.version = 0


class MemoryPresence(PresenceStore):
    """This process only: for development and tests without Redis.

    The same rules as `RedisPresence`. Joins cost O(n) here (a sorted list), which
    is fine for the one-process use this is for.
    """

    def __init__(self) -> None:
        self._rooms: dict[str, _MemoryRoom] = {}
        # Sockets run on the event loop, HTTP views in a thread: one at a time.
        self._lock = threading.Lock()

    async def join(self, room: str, *, entry: str, first: int) -> Outcome:
        return self._apply(room, add=[entry], first=first)

    async def leave(self, room: str, *, entries: list[str]) -> Outcome:
        return self._apply(room, remove=entries)

    async def refresh(self, room: str, *, entries: list[str]) -> Outcome:
        return self._apply(room, add=entries)

    def page(self, room: str, *, after: str | None, limit: int) -> Outcome:
        return self._apply(room, after=after or "", first=limit, skip_first=after is not None)

    def _apply(
        self,
        room: str,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
        first: int = 0,
        after: str = "",
        skip_first: bool = False,
    ) -> Outcome:
        with self._lock:
            state = self._rooms.setdefault(self.key(room), _MemoryRoom())
            now = time.monotonic()
            changes: list[Change] = []

            def changed(user: str, online: bool) -> None:
                state.version += 1
                changes.append((user, online, state.version))

            def gone(entry: str) -> None:
                del state.entries[entry]
                user = _user_of(entry)
                state.counts[user] -= 1
                if state.counts[user] <= 0:
                    del state.counts[user]
                    del state.users[bisect.bisect_left(state.users, user)]
                    changed(user, False)

            for entry in add:
                if entry not in state.entries:
                    user = _user_of(entry)
                    state.counts[user] = state.counts.get(user, 0) + 1
                    if state.counts[user] == 1:
                        bisect.insort(state.users, user)
                        changed(user, True)
                state.entries[entry] = now + _entry_lifetime()
            for entry in remove:
                if entry in state.entries:
                    gone(entry)
            for entry in [e for e, expires in state.entries.items() if expires <= now]:
                gone(entry)
            start = bisect.bisect_right(state.users, after) if skip_first else 0
            names = state.users[start : start + first]
            return Outcome(changes=changes, count=len(state.users), version=state.version, names=names)


# One script for every operation, so each is atomic and sweeps the same way.
# KEYS: the room's entries (sorted set: entry -> expiry, Redis' clock), counts
# (hash: user -> entries), users (sorted set, all scores 0: ordered by name for
# paging) and version (a counter). ARGV: op, entry lifetime, keys' lifetime, sweep
# limit, then per op: join ENTRY FIRST | leave ENTRY... | refresh ENTRY... | page AFTER LIMIT.
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
  add(ARGV[5])
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
  names = redis.call('ZRANGE', U, 0, tonumber(ARGV[6]) - 1)
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
        return [op, _entry_lifetime(), _keys_lifetime(), sweep, *rest]

    async def join(self, room: str, *, entry: str, first: int) -> Outcome:
        reply = await self._script()(
            keys=self._keys(room), args=self._args("join", _SWEEP_ON_JOIN, entry, first)
        )
        return _outcome(reply)

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


@cache
def _store(path: str) -> PresenceStore:
    return import_string(path)()


def get_store() -> PresenceStore:
    return _store(settings.PRESENCE_BACKEND)


# --- per worker: local sockets, heartbeats, batched frames --------------------------------
class _Room:
    """One room as this worker sees it: its local sockets and the changes not yet shown."""

    def __init__(self) -> None:
        self.sockets: dict[str, str] = {}  # socket id -> username
        # Changes since the last frame, per user: [online before, online after,
        # lowest version, highest version]. Changes from different workers may
        # arrive out of order; the versions put them back in order.
        self.pending: dict[str, list[Any]] = {}
        # The highest version already shown, per user: older news is dropped.
        self.shown: dict[str, int] = {}
        # Users shown leaving, oldest first, forgotten from `shown` after a while.
        self.gone: list[tuple[float, str, int]] = []
        self.count = 0
        self.count_version = 0
        self.flush: asyncio.TimerHandle | None = None

    def saw(self, outcome: Outcome) -> None:
        self.note_count(outcome.count, outcome.version)

    def note_count(self, count: int, version: int) -> None:
        if version >= self.count_version:
            self.count, self.count_version = count, version

    def note(self, changes: list[Change]) -> None:
        for user, online, version in changes:
            if version <= self.shown.get(user, 0):
                continue  # older than what the sockets were already told
            entry = self.pending.get(user)
            if entry is None:
                # A change to online means the user was offline just before it.
                self.pending[user] = [not online, online, version, version]
                continue
            if version < entry[2]:
                entry[0], entry[2] = not online, version
            if version > entry[3]:
                entry[1], entry[3] = online, version

    def take_frame(self, list_max: int) -> dict[str, Any] | None:
        """The `presence` frame for the changes since the last one, or None if nobody's status changed."""
        joined, left = [], []
        now = time.monotonic()
        for user, (before, after, _low, high) in self.pending.items():
            self.shown[user] = high
            if after and not before:
                joined.append(user)
            elif before and not after:
                left.append(user)
                self.gone.append((now, user, high))
        self.pending.clear()
        self._forget_gone(now)
        if not joined and not left:
            return None
        if len(joined) + len(left) > list_max:
            # Too many names for one frame: the count alone; names are read over HTTP.
            return {
                "type": ServerFrame.PRESENCE,
                "joined": [],
                "left": [],
                "online_count": self.count,
                "truncated": True,
            }
        joined.sort()
        left.sort()
        return {"type": ServerFrame.PRESENCE, "joined": joined, "left": left, "online_count": self.count}

    def _forget_gone(self, now: float) -> None:
        # Late news about a user who left arrives within moments, not minutes:
        # remembering every user who ever left would grow without bound.
        horizon = now - 60
        kept = 0
        for when, user, version in self.gone:
            if when > horizon:
                break
            if self.shown.get(user) == version:
                del self.shown[user]
            kept += 1
        if kept:
            del self.gone[:kept]


class Tracker:
    """This worker's presence: one per hub (one per event loop)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.rooms: dict[str, _Room] = {}
        self._beating: asyncio.Task | None = None
        self._tasks: set[asyncio.Future] = set()
        # Entries to remove, per room, taken in batches by one task (see leave).
        self._leaving: dict[str, list[str]] = {}
        self._leaver: asyncio.Task | None = None
        hub.observe(Event.PRESENCE_CHANGES, self.on_changes)
        hub.on_close(self.close)

    async def enter(self, room: str, *, socket: str, user: str) -> Snapshot:
        local = self.rooms.get(room)
        if local is None:
            local = self.rooms[room] = _Room()
        local.sockets[socket] = user
        self._keep_beating()
        try:
            outcome = await get_store().join(
                room, entry=member(socket, user), first=settings.PRESENCE_LIST_MAX
            )
        except BaseException:
            self._forget(room, socket)
            raise
        local.saw(outcome)
        await self._publish(room, outcome)
        return Snapshot(online=outcome.names, count=outcome.count)

    def leave(self, room: str, *, socket: str, user: str) -> None:
        """Take the socket out now (no more heartbeats for it); its entry goes with the next batch.

        Sockets often close together (a worker restarting, a network blip, a
        page closed in many tabs): the leaves of one room then cost one Redis
        call and one published event per 1,000, not one each. The batch runs in
        a task of the tracker's, so a consumer cancelled mid-close (daphne
        kills slow ones) cannot leave its user online.
        """
        self._forget(room, socket)
        self._leaving.setdefault(room, []).append(member(socket, user))
        if self._leaver is None or self._leaver.done():
            self._leaver = asyncio.ensure_future(self._leave_pending())

    async def _leave_pending(self) -> None:
        store = get_store()
        while self._leaving:
            room, entries = next(iter(self._leaving.items()))
            del self._leaving[room]
            for start in range(0, len(entries), _REFRESH_CHUNK):
                try:
                    outcome = await store.leave(room, entries=entries[start : start + _REFRESH_CHUNK])
                    await self._publish(room, outcome)
                except asyncio.CancelledError:
                    raise
                except UNAVAILABLE_ERRORS as exc:
                    # The entries expire by themselves (PRESENCE_TTL_SECONDS).
                    log_unavailable(
                        logger, exc, "presence leave failed room=%s entries=%d", room, len(entries)
                    )
                except Exception:
                    logger.exception("presence leave failed room=%s", room)

    def _forget(self, room: str, socket: str) -> None:
        local = self.rooms.get(room)
        if local is None:
            return
        local.sockets.pop(socket, None)
        if not local.sockets:
            # Nobody here to tell: the room's news stops mattering to this worker.
            if local.flush is not None:
                local.flush.cancel()
            del self.rooms[room]

    async def _publish(self, room: str, outcome: Outcome) -> None:
        if outcome.changes:
            # Every worker with sockets in the room, this one included, hears it once.
            await publish(room, changes_event(outcome))

    def on_changes(self, room: str, event: dict[str, Any]) -> None:
        """A `presence.changes` event reached this worker (once, however many local sockets)."""
        local = self.rooms.get(room)
        if local is None:
            return
        try:
            changes = [(str(u), bool(o), int(v)) for u, o, v in event["changes"]]
            count = int(event["count"])
        except (KeyError, TypeError, ValueError):
            logger.warning("presence: dropped a malformed changes event room=%s", room)
            return
        local.note(changes)
        if changes:
            local.note_count(count, max(v for _, _, v in changes))
        if local.flush is None:
            # The interval starts with its first change, so a join and a leave
            # inside it cancel out, and frames are at least an interval apart.
            loop = asyncio.get_running_loop()
            local.flush = loop.call_later(settings.PRESENCE_FLUSH_MS / 1000, self._flush, room, local)

    def _flush(self, room: str, local: _Room) -> None:
        local.flush = None
        if self.rooms.get(room) is not local:
            return
        frame = local.take_frame(settings.PRESENCE_LIST_MAX)
        if frame is not None:
            task = asyncio.ensure_future(
                self.hub.deliver_local(room, {"type": Event.PRESENCE, "frame": frame})
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _keep_beating(self) -> None:
        if self._beating is None or self._beating.done():
            self._beating = asyncio.ensure_future(self._beat())

    async def _beat(self) -> None:
        """Refresh every local socket's entry, a room at a time, until no room is left."""
        while self.rooms:
            await asyncio.sleep(settings.PRESENCE_HEARTBEAT_SECONDS)
            for room, local in list(self.rooms.items()):
                try:
                    await self._refresh(room, local)
                except asyncio.CancelledError:
                    raise
                except UNAVAILABLE_ERRORS as exc:
                    # The entries expire if this lasts; the hub closes the sockets meanwhile.
                    log_unavailable(logger, exc, "presence heartbeat failed room=%s", room)
                except Exception:
                    logger.exception("presence heartbeat failed room=%s", room)

    async def _refresh(self, room: str, local: _Room) -> None:
        entries = [member(socket, user) for socket, user in local.sockets.items()]
        store = get_store()
        for start in range(0, len(entries), _REFRESH_CHUNK):
            chunk = entries[start : start + _REFRESH_CHUNK]
            outcome = await store.refresh(room, entries=chunk)
            local.saw(outcome)
            await self._publish(room, outcome)
            # A socket that left while the refresh was on its way may have been
            # put back by it: take it out again (a leave of an absent entry is a no-op).
            returned = [entry for entry in chunk if entry.split("|", 1)[0] not in local.sockets]
            if returned:
                await self._publish(room, await store.leave(room, entries=returned))

    async def close(self) -> None:
        for room in self.rooms.values():
            if room.flush is not None:
                room.flush.cancel()
        self.rooms.clear()
        for task in [self._beating, self._leaver, *self._tasks]:
            if task is not None:
                task.cancel()
        self._tasks.clear()


def changes_event(outcome: Outcome) -> dict[str, Any]:
    """The channel-layer event that carries one operation's changes to every worker in the room."""
    return {
        "type": Event.PRESENCE_CHANGES,
        "changes": [[user, online, version] for user, online, version in outcome.changes],
        "count": outcome.count,
    }


_trackers: weakref.WeakKeyDictionary[Hub, Tracker] = weakref.WeakKeyDictionary()


def _tracker() -> Tracker:
    hub = get_hub()
    tracker = _trackers.get(hub)
    if tracker is None:
        tracker = _trackers[hub] = Tracker(hub)
    return tracker


# --- the API the consumer and the views use -------------------------------------------
async def enter(room: str, *, socket: str, user: str) -> Snapshot:
    """A socket joins the room's presence; what its welcome shows."""
    return await _tracker().enter(room, socket=socket, user=user)


def leave(room: str, *, socket: str, user: str) -> None:
    """A socket leaves the room's presence (at once for this worker, in Redis with the next batch)."""
    _tracker().leave(room, socket=socket, user=user)


def online_page(room: str, *, after: str | None, limit: int) -> Page:
    """Up to `limit` users online after `after` (exclusive), sorted; for HTTP views."""
    outcome = get_store().page(room, after=after, limit=limit + 1)
    if outcome.changes:
        # The read found expired entries: their users left, and the room should hear it.
        publish_now(room, changes_event(outcome))
    names = outcome.names[:limit]
    more = len(outcome.names) > limit
    return Page(results=names, next_after=names[-1] if more else None, count=outcome.count)
