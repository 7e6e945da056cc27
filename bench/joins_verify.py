"""Each member's ids in a `joins` run against the posts it must have (`verify` in
bench/joins_client.py): what a member must get is a suffix of the posts, from its welcome's
`last_id` (the service) or from its socket's opening (the baselines, which have no ids); the
deliveries are counted as they arrive, then each member's ids are tallied exactly."""

from __future__ import annotations

import bisect
from array import array

from bench.joins_member import Member


class Expected:
    """The posts each member must get (`ours`: the room's ids, or the baseline's sequence numbers)."""

    def __init__(self, members: list[Member], ids: list[int] | None, sends_blob: bytes | None) -> None:
        sends = array("q")
        sends.frombytes(sends_blob or b"")
        self.members = members
        self.service = service = ids is not None
        self.ours = ours = sorted(ids) if service else list(range(len(sends)))
        self.ours_set = set(ours)
        # Per member: the first of `ours` it must get (an index into `ours`).
        self.first = first = {
            id(m): bisect.bisect_right(ours, m.last_id) if service else bisect.bisect_right(sends, m.t_open)
            for m in members
        }
        self.floor = {id(m): ours[first[id(m)]] if first[id(m)] < len(ours) else None for m in members}
        self.want = sum(len(ours) - first[id(m)] for m in members if not m.dead)
        self.scanned = dict.fromkeys(self.floor, 0)
        self.hits = dict.fromkeys(self.floor, 0)

    def have(self) -> int:
        """How many of the expected deliveries the members still connected have (counted as they come)."""
        total = 0
        for m in self.members:
            key, low = id(m), self.floor[id(m)]
            if low is not None:
                for x in m.ids[self.scanned[key] :]:
                    if x >= low and x in self.ours_set:
                        self.hits[key] += 1
                self.scanned[key] = len(m.ids)
            if not m.dead:
                total += self.hits[key]
        return total

    def tally(self) -> tuple[dict[str, int], int, int, list[str]]:
        """Each member's ids against the suffix of `ours` it must get: the totals, early and late
        deliveries, and a few members that fell short."""
        ours, first, service = self.ours, self.first, self.service
        ours_set = self.ours_set
        totals = dict.fromkeys(
            ("expected", "received", "lost", "duplicates", "unexpected", "out_of_order", "short_members"), 0
        )
        early = late = 0
        top = ours[-1] if ours else 0
        samples: list[str] = []
        for m in self.members:
            exp = set(ours[first[id(m)] :])
            got = set(m.ids)
            missing = len(exp - got)
            dup = len(m.ids) - len(got)
            # The service: a live id at or below the welcome's last_id was in its history already;
            # one above every id read is a post stored after the read (counted by the parent).
            stray = got - exp
            late_ids = {i for i in stray if service and i > top}
            late += len(late_ids)
            stray -= late_ids
            unexpected = len(stray) if service else len(stray - ours_set)
            early += 0 if service else len(stray & ours_set)
            disorder = sum(1 for a, b in zip(m.ids, m.ids[1:], strict=False) if b <= a)
            totals["expected"] += len(exp)
            totals["received"] += len(got & exp)
            totals["lost"] += missing
            totals["duplicates"] += dup
            totals["unexpected"] += unexpected
            totals["out_of_order"] += disorder
            if missing or dup or unexpected:
                totals["short_members"] += 1
                if len(samples) < 5:
                    closed = f" (closed {m.close_code or 1006})" if m.dead else ""
                    samples.append(
                        f"member {m.index}: {missing} missing, {dup} duplicates, "
                        f"{unexpected} unexpected{closed}"
                    )
        return totals, early, late, samples
