"""Many callers' lookups answered together: one read per batch instead of one per caller.

A socket handshake makes the same few lookups as every other (who is calling,
its state, a slot among its user's sockets). When a thousand sockets arrive
at once, each lookup made on its own costs a thread hop, a query or a Redis
call and their Python overhead a thousand times; `Batched` makes it once per
batch of whoever is waiting, and a lone caller waits for nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# Keys in one batch: bounds one read's size (a query's IN list, a script's keys).
BATCH_LIMIT = 200


class Batched(Generic[K, V]):
    """One lookup per caller, read for all the callers waiting at once.

    `read(keys)` returns one answer per key, in order; an answer that is an
    exception is raised to that key's caller alone. A caller waits only for
    the read in flight when it arrives: a lone caller is read at once, and
    under a storm each read takes whoever came while the previous one ran.
    An exception from `read` itself (the backing service is down) reaches
    every caller of that read.
    """

    def __init__(self, read: Callable[[list[K]], Awaitable[Sequence[V | BaseException]]]) -> None:
        self.read = read
        self._pending: list[tuple[K, asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests run one per test): start afresh
            self._loop, self._pending, self._drainer = loop, [], None
        future = loop.create_future()
        self._pending.append((key, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:BATCH_LIMIT], self._pending[BATCH_LIMIT:]
            try:
                answers = await self.read([key for key, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), answer in zip(batch, answers, strict=True):
                if future.done():  # its caller went away (the socket closed)
                    continue
                if isinstance(answer, BaseException):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
