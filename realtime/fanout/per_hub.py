"""Things a worker keeps one of per hub (presence's tracker, the socket slots, live's router).

A worker has one hub (realtime.fanout.hub) and tests make one per test, so what
is built on a hub is made once per hub and, when it asks, closed with it.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

from realtime.fanout.hub import Hub, get_hub

T = TypeVar("T")


def per_hub(
    make: Callable[[Hub], T], *, close: Callable[[T], Awaitable[None]] | None = None
) -> Callable[[], T]:
    """A getter of one `make(hub)` per hub (one per worker; one per test in tests).

    With `close`, the hub awaits `close(thing)` when it closes, so what was built
    on it stops with it.
    """
    made: weakref.WeakKeyDictionary[Hub, T] = weakref.WeakKeyDictionary()

    def get() -> T:
        hub = get_hub()
        thing = made.get(hub)
        if thing is None:
            thing = made[hub] = make(hub)
            if close is not None:
                hub.on_close(lambda: close(thing))
        return thing

    return get
