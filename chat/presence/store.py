"""The online set of each chat room: the store interface, and the in-process store.

Owns what a store operation is (`Outcome`: the changes it made, each numbered by
the room's version counter, and the room's count after it), the entry a socket
holds in a room (`member`), how long an entry lives, and the choice of store by
`PRESENCE_BACKEND`, like Django's message storages: `RedisPresence`
(chat/presence/redis_store.py, shared by every worker) or `MemoryPresence`
(here: this process only, for development without Redis).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from realtime import redis_client

# (username, online after the change, the room's version at the change)
Change = tuple[str, bool, int]


@dataclass(frozen=True)
class Outcome:
    """What one store operation did: the changes it made, and the room after it."""

    changes: list[Change]
    count: int  # users online after the operation
    version: int  # the room's version after it: the count is as of this version
    names: list[str] = field(default_factory=list)  # first names after `after` (join, page)


def member(socket: str, user: str) -> str:
    # Socket ids ("socket.<hex>", RealtimeConsumer.socket_id) never contain "|";
    # usernames may, which is why the user is whatever follows the first one.
    return f"{socket}|{user}"


def user_of(entry: str) -> str:
    return entry.split("|", 1)[1]


def entry_lifetime() -> float:
    # Refreshed every heartbeat, an entry outlives the next one by a heartbeat;
    # the sweep that finds it expired runs within one more (see chat/presence/__init__.py).
    return settings.PRESENCE_TTL_SECONDS - settings.PRESENCE_HEARTBEAT_SECONDS


class PresenceStore:
    """The online set of every room. Every operation is atomic and reports its changes.

    A user with several sockets is online while any of them is: `joined` on the
    first socket in, `left` on the last one out or expired.
    """

    def key(self, room: str) -> str:
        return f"{redis_client.namespaced(settings.PRESENCE_KEY_PREFIX)}:{room}"

    async def join(self, room: str, *, entries: list[str], first: int) -> Outcome:
        """Add sockets' entries; `names` are the first `first` users online after them."""
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

    async def join(self, room: str, *, entries: list[str], first: int) -> Outcome:
        return self._apply(room, add=entries, first=first)

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
                user = user_of(entry)
                state.counts[user] -= 1
                if state.counts[user] <= 0:
                    del state.counts[user]
                    del state.users[bisect.bisect_left(state.users, user)]
                    changed(user, False)

            for entry in add:
                if entry not in state.entries:
                    user = user_of(entry)
                    state.counts[user] = state.counts.get(user, 0) + 1
                    if state.counts[user] == 1:
                        bisect.insort(state.users, user)
                        changed(user, True)
                state.entries[entry] = now + entry_lifetime()
            for entry in remove:
                if entry in state.entries:
                    gone(entry)
            for entry in [e for e, expires in state.entries.items() if expires <= now]:
                gone(entry)
            start = bisect.bisect_right(state.users, after) if skip_first else 0
            names = state.users[start : start + first]
            return Outcome(changes=changes, count=len(state.users), version=state.version, names=names)


@cache
def _store(path: str) -> PresenceStore:
    return import_string(path)()


def get_store() -> PresenceStore:
    return _store(settings.PRESENCE_BACKEND)
