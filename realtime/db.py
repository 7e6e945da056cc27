"""Database connections of the real-time runtime: socket handlers' two lanes, HTTP requests' closing.

Socket handlers run their database work in two small thread pools, one per lane.

Channels' `database_sync_to_async` runs every call of a process on one thread,
first come first served. In a join storm that thread is busy with handshakes
(session, room, the welcome's history), and a post from a socket already in the
room waits behind all of them: with 1,000 users joining, posts took seconds to
be stored. So socket handlers use two lanes, each a pool of its own threads:

- `handshake`: what a new socket needs before its `welcome` (who is calling,
  which room, its state);
- `frames`: what open sockets ask for (posts, resumes, read state, gap reads).

A storm of handshakes fills only its own lane, and shares its work: the
handshake lookups every socket makes (who is calling, its state) are
`batched`, so while one batch is being read the next one gathers, and a
thousand sockets arriving together cost a few dozen queries and thread hops
instead of thousands. Each thread keeps its database
connection as `DATABASE_CONN_MAX_AGE` says; Channels' wrapper closes broken
and expired ones around every call, as before. Calls for one socket never run
at the same time (a consumer handles one frame at a time), and ordering
between sockets comes from the database's locks, not from the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from channels.db import DatabaseSyncToAsync
from django.conf import settings
from django.db import connections

from realtime.batching import Batched, K, V

_pools: dict[str, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def _pool(lane: str) -> ThreadPoolExecutor:
    with _lock:
        pool = _pools.get(lane)
        if pool is None:
            pool = _pools[lane] = ThreadPoolExecutor(
                max_workers=settings.DB_SOCKET_THREADS, thread_name_prefix=f"relay-db-{lane}"
            )
        return pool


def handshake(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` as a coroutine function that runs in the handshake lane."""
    return DatabaseSyncToAsync(func, thread_sensitive=False, executor=_pool("handshake"))


def frames(func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` as a coroutine function that runs in the frames lane."""
    return DatabaseSyncToAsync(func, thread_sensitive=False, executor=_pool("frames"))


def batched(
    many: Callable[[list[K]], Sequence[V | BaseException]], *, lane: str = "handshake"
) -> Callable[[K], Awaitable[V]]:
    """`many(keys)` as a coroutine function of one key, run in `lane` ("handshake" or "frames")
    for all the callers waiting together (realtime.batching)."""
    return Batched({"handshake": handshake, "frames": frames}[lane](many))


def close_connections(timeout: float = 10.0) -> None:
    """Close the database connection of every lane thread (for tests, before the test database goes)."""
    from django.db import connections

    threads = settings.DB_SOCKET_THREADS  # each pool's size (_pool)
    with _lock:
        pools = list(_pools.values())
    for pool in pools:
        # One task per thread: each waits at the barrier until all have started,
        # so no thread takes two and every thread closes its own connection.
        barrier = threading.Barrier(threads, timeout=timeout)

        def close(barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            connections.close_all()

        for future in [pool.submit(close) for _ in range(threads)]:
            future.result(timeout)


def close_request_connections(sender, **kwargs) -> None:
    """Close the database connections an HTTP request opened, whatever CONN_MAX_AGE says.

    Under ASGI, Django runs each request's sync code in a thread (and context)
    of its own, so a connection kept for reuse is never reused: it stays open
    until garbage collection finds it. With the default DATABASE_CONN_MAX_AGE
    a worker held 75 idle connections after 480 publish requests, near
    PostgreSQL's default max_connections of 100. Django's docs say to disable
    persistent connections under ASGI; socket handlers, which all share one
    thread (channels' database_sync_to_async), keep theirs and reuse it.
    """
    connections.close_all()
