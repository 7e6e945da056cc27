"""Endpoints whose items have ordered ids (a chat room, an inbox): each item once per socket, in id order.

`live_from` is the newest id of the stream when the socket joined its group
(the `welcome` frame's `last_id`); every later id reaches the socket live, and
`cursor` is the highest id delivered so far, so (live_from, cursor] is exactly
what went out live. Each live event carries the stream's previous id: when
that is above `cursor`, an earlier push is late or lost, and the socket reads
the gap from the database in order instead of waiting; the late push is
dropped when it comes. A `resume` replays from the database, skipping
(live_from, cursor], and ends with `replay_done`.

Two rules, the same for every stream:
- ids the client says it has (a resume's `after`, past `live_from`) count as delivered;
- a gap fill up to id N counts every id up to N as delivered, read or not:
  writers to one stream are serialized until commit (a room's row lock, an
  inbox's advisory lock), so once N has committed every smaller id has too,
  and what the read did not return was deleted.

A subclass supplies the selector (`read_items`), the frame builders (one for
a live event, passed to `push_item`, usually `item_frame(...)`, and
`row_frame` for a row read back) and its replay limit setting; it calls
`start_stream(last_id)` once joined and `push_item` from the handler of its
live items' event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from django.conf import settings

from realtime.consumers import RealtimeConsumer
from realtime.fanout.events import LocalEvent
from realtime.protocol import Resume, ServerFrame


def item_frame(kind: ServerFrame) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The builder of a live item's frame: the item the event carries, under the frame's own type.

    (`{"type": "message", "message": {...}}` from an event `{"message": {...}, ...}`.)
    """
    key = str(kind)

    def build(event: dict[str, Any]) -> dict[str, Any]:
        return {"type": kind, key: event[key]}

    return build


class OrderedStreamConsumer(RealtimeConsumer):
    """A socket endpoint for one ordered stream: its cursor, resume and gap fill (see above)."""

    # The setting that caps the rows of one replay page and of one gap-fill read.
    replay_limit_setting: ClassVar[str]
    # Whether a resume reads the stream even when the client already has everything this socket
    # has seen (a read that also checks the client may still read the stream, as chat's does).
    resume_always_reads: ClassVar[bool] = False

    cursor = 0
    live_from = 0

    # --- what a subclass supplies ------------------------------------------------------
    async def read_items(
        self, *, after: int, limit: int, skip: tuple[int, int] | None = None, up_to: int | None = None
    ) -> Sequence[Any] | None:
        """Rows with id > `after`, ascending, at most `limit`, none in (skip] or past `up_to`.

        None when this socket may no longer read the stream (see `stream_refused`).
        """
        raise NotImplementedError

    def row_frame(self, row: Any) -> dict[str, Any]:
        """The frame for a row read back by a replay or a gap fill."""
        raise NotImplementedError

    def require_stream(self) -> None:
        """Raise FrameError if this socket has no stream to resume (yet)."""

    async def stream_refused(self, resume: Resume | None) -> None:
        """`read_items` said no: during `resume`, or during a gap fill (None)."""
        raise NotImplementedError

    # --- the stream ------------------------------------------------------------------------
    def start_stream(self, last_id: int | None) -> None:
        """Call once the socket is in the stream's group, with the stream's newest id read after joining."""
        self.live_from = self.cursor = last_id or 0

    def push_item(
        self, event: LocalEvent, item_id: int, build: Callable[[dict[str, Any]], dict[str, Any]], kind: str
    ) -> Awaitable[None] | None:
        """Live item `item_id`: sent as `build(event)` if it follows on from the cursor; a gap read first.

        `build` reads the event alone: its frame is built once per worker
        (realtime.delivery.send_shared). Arguments rather than class
        attributes: this runs once per socket per item, and reading those
        through the instance costs more than passing them.
        """
        if item_id <= self.cursor:
            return None  # already delivered by a replay or a gap fill
        if (event.get("prev_id") or 0) > self.cursor:
            self.needs_io()  # an earlier push is late or lost
            return self._fill_gap(up_to=item_id)
        self.cursor = item_id
        # The same bytes for every socket of the stream on this worker.
        return self.send_shared(event, build, kind)

    async def frame_resume(self, frame: Resume) -> None:
        self.require_stream()
        limit = self._replay_limit()
        # Ids the client says it has count as delivered.
        if frame.after > self.live_from:
            self.cursor = max(self.cursor, frame.after)
        if frame.after >= self.cursor and not self.resume_always_reads:
            # The usual reconnect: the client has all this socket has seen, and anything newer
            # reaches it live (it joined the stream's group before reading its state). No read.
            await self.send_frame(
                {"type": ServerFrame.REPLAY_DONE, "last_id": frame.after or None, "more": False}
            )
            return
        rows = await self.read_items(after=frame.after, limit=limit + 1, skip=(self.live_from, self.cursor))
        if rows is None:
            await self.stream_refused(frame)
            return
        more = len(rows) > limit
        rows = rows[:limit]
        for row in rows:
            await self._deliver_row(row)
        last_id = rows[-1].id if more else (max(frame.after, self.cursor) or None)
        await self.send_frame({"type": ServerFrame.REPLAY_DONE, "last_id": last_id, "more": more})

    async def _fill_gap(self, *, up_to: int) -> None:
        limit = self._replay_limit()
        while self.cursor < up_to:
            rows = await self.read_items(after=self.cursor, limit=limit, up_to=up_to)
            if rows is None:
                await self.stream_refused(None)
                return
            if not rows:
                break
            for row in rows:
                await self._deliver_row(row)
        # Every id up to `up_to` has committed: what the read did not return was deleted.
        self.cursor = max(self.cursor, up_to)

    async def _deliver_row(self, row: Any) -> None:
        if self.live_from < row.id <= self.cursor:
            return  # went out live while this replay was reading
        self.cursor = max(self.cursor, row.id)
        await self.send_frame(self.row_frame(row))

    def _replay_limit(self) -> int:
        return getattr(settings, self.replay_limit_setting)
