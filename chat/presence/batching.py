"""This worker's presence: its local sockets, their heartbeats, and batched frames.

Owns, per worker and per room, the sockets that are in it here, the heartbeat
that keeps their entries alive (and sweeps a dead worker's), the batching of
enters and leaves into one store call per room, and the batching of the room's
`presence.changes` events into at most one `presence` frame every
`PRESENCE_FLUSH_MS`, carrying the net `joined` and `left` since the previous
frame (or only the count, `truncated`, past `PRESENCE_LIST_MAX` names). Each
worker handles each change once, not once per socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from chat.presence.store import Change, Outcome, get_store, member
from realtime.batching import Batched
from realtime.fanout.hub import Hub
from realtime.fanout.per_hub import per_hub
from realtime.fanout.push import publish
from realtime.operations.errors import UNAVAILABLE_ERRORS, log_unavailable
from realtime.protocol import Event, ServerFrame

logger = logging.getLogger("chat.presence")

# Members refreshed by one heartbeat call: bounds a script's run time in Redis.
_REFRESH_CHUNK = 1000


@dataclass(frozen=True)
class Snapshot:
    """What a new socket's welcome shows."""

    online: list[str]  # the first PRESENCE_LIST_MAX users online, sorted
    count: int


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
        # Sockets entering together (a join storm) enter in one store call per room.
        self._entering = Batched(self._enter_many)
        hub.observe(Event.PRESENCE_CHANGES, self.on_changes)
        hub.on_close(self.close)

    async def enter(self, room: str, *, socket: str, user: str) -> Snapshot:
        local = self.rooms.get(room)
        if local is None:
            local = self.rooms[room] = _Room()
        local.sockets[socket] = user
        self._keep_beating()
        try:
            return await self._entering((room, member(socket, user)))
        except BaseException:
            self._forget(room, socket)
            raise

    async def _enter_many(self, wanted: list[tuple[str, str]]) -> list[Snapshot | BaseException]:
        """The entries of sockets entering together: one store call and one published change per room."""
        by_room: dict[str, list[str]] = {}
        for room, entry in wanted:
            by_room.setdefault(room, []).append(entry)
        rooms = list(by_room)
        answers = await asyncio.gather(
            *(self._enter_room(room, by_room[room]) for room in rooms), return_exceptions=True
        )
        snapshots = dict(zip(rooms, answers, strict=True))
        return [snapshots[room] for room, _ in wanted]

    async def _enter_room(self, room: str, entries: list[str]) -> Snapshot:
        outcome = await get_store().join(room, entries=entries, first=settings.PRESENCE_LIST_MAX)
        local = self.rooms.get(room)
        if local is not None:
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


# This worker's presence tracker, one per hub.
get_tracker = per_hub(Tracker)
