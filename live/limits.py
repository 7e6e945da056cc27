"""What one socket, or one client address, may cost on `/ws/live/` (docs/protocol.md, "Limits").

- Anonymous sockets: at most LIVE_ANONYMOUS_SOCKETS_PER_ADDRESS open at once per
  client address, counted on every worker (the per-user socket cap's slots,
  keyed by address); one more is closed with 4429 `too_many_sockets`.
- Every socket: LIVE_MAX_TOPICS topics; subscribe and unsubscribe frames
  together at LIVE_SUBSCRIBE_RATE_PER_SECOND with bursts of LIVE_SUBSCRIBE_BURST
  (each costs a Redis round trip); client publishes at the rate its topic declares.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from django.conf import settings

from realtime.authentication import socket_cap
from realtime.authentication.login_throttle import client_address


class Bucket:
    """A token bucket for one socket: `burst` at once, refilled at `rate` per second."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def subscribe_bucket() -> Bucket:
    return Bucket(settings.LIVE_SUBSCRIBE_RATE_PER_SECOND, settings.LIVE_SUBSCRIBE_BURST)


def socket_address(scope: dict[str, Any]) -> str:
    """The client's address, as the login throttle reads it (a trusted proxy's X-Forwarded-For)."""
    client = scope.get("client") or ("unknown", 0)
    forwarded = ", ".join(
        value.decode("latin-1") for key, value in scope.get("headers", ()) if key == b"x-forwarded-for"
    )
    return client_address(SimpleNamespace(META={"REMOTE_ADDR": client[0], "HTTP_X_FORWARDED_FOR": forwarded}))


def anonymous_slot(socket_id: str) -> str:
    # Not the socket's own id: that one is its user's slot once it sends `auth`.
    return f"{socket_id}.anonymous"


async def take_anonymous(scope: dict[str, Any], socket_id: str) -> bool:
    """A slot among the address's anonymous sockets; False when it holds the cap already."""
    return await socket_cap.get_slots().take(
        user_id=f"anonymous:{socket_address(scope)}",
        socket=anonymous_slot(socket_id),
        cap=settings.LIVE_ANONYMOUS_SOCKETS_PER_ADDRESS,
    )


def release_anonymous(socket_id: str) -> None:
    socket_cap.get_slots().release(socket=anonymous_slot(socket_id))
