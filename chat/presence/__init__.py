"""Who is online in each chat room: shared by every worker, announced in batches.

This package owns presence (contract v2, "Presence"):

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

Its parts: `store` (the store interface, `Outcome`, `MemoryPresence`),
`redis_store` (`RedisPresence` and its script), `batching` (a worker's sockets,
heartbeats and frames); this module is the API the chat consumer and views use.
"""

from __future__ import annotations

from dataclasses import dataclass

from chat.presence.batching import Snapshot, Tracker, _Room, changes_event, get_tracker
from chat.presence.redis_store import RedisPresence
from chat.presence.store import Change, MemoryPresence, Outcome, PresenceStore, get_store, member
from realtime.fanout.push import publish_now

__all__ = [
    "PAGE_MAX",
    "Change",
    "MemoryPresence",
    "Outcome",
    "Page",
    "PresenceStore",
    "RedisPresence",
    "Snapshot",
    "Tracker",
    "_Room",
    "changes_event",
    "enter",
    "get_store",
    "leave",
    "member",
    "online_page",
]

# The largest page of the online list over HTTP (contract: limit <= 1000).
PAGE_MAX = 1000


@dataclass(frozen=True)
class Page:
    results: list[str]
    next_after: str | None
    count: int


# --- the API the consumer and the views use -------------------------------------------
async def enter(room: str, *, socket: str, user: str) -> Snapshot:
    """A socket joins the room's presence; what its welcome shows."""
    return await get_tracker().enter(room, socket=socket, user=user)


def leave(room: str, *, socket: str, user: str) -> None:
    """A socket leaves the room's presence (at once for this worker, in Redis with the next batch)."""
    get_tracker().leave(room, socket=socket, user=user)


def online_page(room: str, *, after: str | None, limit: int) -> Page:
    """Up to `limit` users online after `after` (exclusive), sorted; for HTTP views."""
    outcome = get_store().page(room, after=after, limit=limit + 1)
    if outcome.changes:
        # The read found expired entries: their users left, and the room should hear it.
        publish_now(room, changes_event(outcome))
    names = outcome.names[:limit]
    more = len(outcome.names) > limit
    return Page(results=names, next_after=names[-1] if more else None, count=outcome.count)
