"""Lookups of callers waiting together are read together; each gets its own answer or error."""

from __future__ import annotations

import asyncio

import pytest

from realtime.batching import Batched


async def test_callers_waiting_together_share_one_read_and_get_their_own_answers():
    """While one read runs, the next callers gather into one read; a per-key error reaches only its caller."""
    reads: list[list[int]] = []
    started, gate = asyncio.Event(), asyncio.Event()

    async def read(keys: list[int]):
        reads.append(keys)
        started.set()
        await gate.wait()
        return [ValueError(key) if key < 0 else key * 10 for key in keys]

    lookup = Batched(read)
    first = asyncio.ensure_future(lookup(1))
    await started.wait()
    rest = [asyncio.ensure_future(lookup(key)) for key in (2, -3, 4)]
    gate.set()
    assert await first == 10
    answers = await asyncio.gather(*rest, return_exceptions=True)
    assert answers[0] == 20 and answers[2] == 40
    assert isinstance(answers[1], ValueError)
    assert reads == [[1], [2, -3, 4]]


async def test_a_failed_read_fails_every_caller_of_that_read_and_the_next_read_runs():
    """The backing service down for one read: its callers get the error; later callers are read afresh."""
    down = True

    async def read(keys: list[int]):
        if down:
            raise ConnectionError("down")
        return keys

    lookup = Batched(read)
    failed = await asyncio.gather(lookup(1), lookup(2), return_exceptions=True)
    assert all(isinstance(answer, ConnectionError) for answer in failed)
    down = False
    assert await lookup(3) == 3


async def test_a_caller_that_goes_away_does_not_disturb_the_others():
    """A cancelled caller (its socket closed) is skipped; the rest of its batch is answered."""
    started, gate = asyncio.Event(), asyncio.Event()

    async def read(keys: list[int]):
        started.set()
        await gate.wait()
        return keys

    lookup = Batched(read)
    gone, kept = asyncio.ensure_future(lookup(1)), asyncio.ensure_future(lookup(2))
    await started.wait()
    gone.cancel()
    gate.set()
    assert await kept == 2
    with pytest.raises(asyncio.CancelledError):
        await gone
