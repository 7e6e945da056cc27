"""Failed logins, counted per username and per client address (contract v2).

After `LOGIN_FAILURES_MAX` failures within `LOGIN_FAILURES_WINDOW_SECONDS` for
one username, or from one client address, further attempts are refused (429
`rate_limited` with `Retry-After` on `POST /api/token/` and the login form)
until the oldest of those failures leaves the window. Successes reset nothing:
a login from one address must not clear what another address ran up.

The count is a sliding log, exact to the second: one Redis sorted set per
username and per address, in the deployment's namespace, holding the times of
the last `LOGIN_FAILURES_MAX` failures (Redis' clock, so every worker agrees).
A check and a failure are each one script call for both keys. Without Redis
(development) the log lives in this process.

Why not throttled-py, which the chat rate limit uses: its algorithms count
every call they are asked about, and its window algorithms are fixed windows
aligned to the clock (10 failures straddling a boundary would not block) with
no time to retry on a peek; here only failures count, a check must not count,
and the answer carries the exact time to wait.

Usernames are hashed into the keys (bounded length, no user text in Redis
names); passwords are never seen here.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import threading
import time
import uuid
from collections import deque
from functools import cache
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from realtime import redis_client
from realtime.operations.logs import log_event

logger = logging.getLogger("realtime.auth")

# KEYS: the logs to check or add to. ARGV: op ("check" | "fail"), max, window
# seconds, then for "fail" a unique member. Reply: seconds until every key is
# under max (0: not blocked), as a string (Lua numbers become integers).
_SCRIPT = """
local op, max, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local wait = 0
for _, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if op == 'fail' then
    redis.call('ZADD', key, now, ARGV[4])
    -- Only the newest `max` failures matter: a flood cannot grow the key.
    redis.call('ZREMRANGEBYRANK', key, 0, -(max + 1))
    redis.call('EXPIRE', key, window + 1)
  end
  if redis.call('ZCARD', key) >= max then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local left = tonumber(oldest[2]) + window - now
    if left > wait then wait = left end
  end
end
return tostring(wait)
"""


class _MemoryLog:
    """The same sliding log in this process (no Redis: one process only)."""

    def __init__(self) -> None:
        self._logs: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # views run in threads

    def run(self, keys: list[str], *, fail: bool) -> float:
        maximum, window = settings.LOGIN_FAILURES_MAX, settings.LOGIN_FAILURES_WINDOW_SECONDS
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for key in keys:
                log = self._logs.setdefault(key, deque())
                while log and log[0] <= now - window:
                    log.popleft()
                if fail:
                    log.append(now)
                    while len(log) > maximum:
                        log.popleft()
                if len(log) >= maximum:
                    wait = max(wait, log[0] + window - now)
                if not log:
                    del self._logs[key]
        return wait


_memory = _MemoryLog()
_script_lock = threading.Lock()


@cache
def _redis_script(url: str, sentinels: tuple[str, ...]) -> Any:
    # One blocking client per Redis configuration (thread-safe: a connection per thread).
    return redis_client.sync_client().register_script(_SCRIPT)


def _keys(username: str, address: str) -> list[str]:
    base = redis_client.namespaced(settings.LOGIN_THROTTLE_KEY_PREFIX)
    user = hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return [f"{base}:user:{user}", f"{base}:addr:{address}"]


def _run(username: str, address: str, *, fail: bool) -> float:
    keys = _keys(username, address)
    if not redis_client.configured():
        return _memory.run(keys, fail=fail)
    with _script_lock:
        script = _redis_script(settings.REDIS_URL, tuple(settings.REDIS_SENTINELS))
    args: list[Any] = ["fail" if fail else "check", settings.LOGIN_FAILURES_MAX]
    args.append(settings.LOGIN_FAILURES_WINDOW_SECONDS)
    if fail:
        args.append(uuid.uuid4().hex)
    reply = script(keys=keys, args=args)
    return float(reply.decode() if isinstance(reply, bytes) else reply)


def retry_after(*, username: str, address: str) -> int | None:
    """Whole seconds to wait before trying to log in again, or None when allowed.

    Raises one of UNAVAILABLE_ERRORS when Redis cannot be reached: the caller
    refuses (a throttle that fails open is no throttle).
    """
    wait = _run(username, address, fail=False)
    return math.ceil(wait) if wait > 0 else None


def record_failure(*, username: str, address: str) -> None:
    _run(username, address, fail=True)


# --- the client's address ------------------------------------------------------------------
@cache
def _networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def _trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _networks(tuple(settings.TRUSTED_PROXIES)))


def client_address(request: HttpRequest) -> str:
    """The address the request came from: `REMOTE_ADDR`, or, when that is a trusted proxy, the
    nearest address in `X-Forwarded-For` that is not one.

    The header is read right to left, since each proxy appends the address it
    saw: everything left of the first untrusted hop is the client's to forge.
    """
    address = request.META.get("REMOTE_ADDR") or "unknown"
    if not _trusted(address):
        return address
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # not an address: nothing left of it can be trusted either
        address = hop
        if not _trusted(hop):
            break
    return address


def throttled(request: HttpRequest, username: str) -> int | None:
    """`retry_after` for this request; logs a refusal (never the password, nor the username)."""
    address = client_address(request)
    wait = retry_after(username=username, address=address)
    if wait is not None:
        log_event(logger, "login_throttled", address=address, retry_after=wait, path=request.path)
    return wait


def count_failure(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **_: Any):
    """`user_login_failed`: every failed `authenticate()` with a request (the token API, the
    login form, the admin's login), connected in realtime.authentication.apps."""
    username = credentials.get("username")
    if request is None or not isinstance(username, str) or refused(request) is not None:
        return  # a refusal by ThrottleBackend is not another failure: it would stretch the wait
    record_failure(username=username, address=client_address(request))


_REFUSED = "_relay_login_retry_after"


def refused(request: HttpRequest) -> int | None:
    """Seconds to wait when `authenticate()` failed because the throttle was on, else None."""
    return getattr(request, _REFUSED, None)


class ThrottleBackend:
    """First in AUTHENTICATION_BACKENDS: no password is checked while the throttle is on.

    So every login path is throttled by the one check, before the password
    hash: the token API and the login form then answer 429 (`refused`), any
    other login form (the admin's) says only that the login failed.
    """

    def authenticate(self, request: HttpRequest | None, username: str | None = None, **_: Any) -> None:
        if request is None or not isinstance(username, str):
            return None
        wait = throttled(request, username)
        if wait is not None:
            setattr(request, _REFUSED, wait)
            raise PermissionDenied  # authenticate() stops here: no other backend is asked
        return None

    # No get_user: sessions never name this backend (force_login and login()
    # pick the first backend that has one).
