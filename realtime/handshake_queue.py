"""The handshake queue: the sockets this worker is still handshaking, and refusing more past a bound.

Owns, per worker process, the count of WebSocket handshakes in progress, the
refusal of a new handshake while `WS_HANDSHAKE_QUEUE_LIMIT` are in progress
(load shedding), and what it reports: the gauge and counter at `/metrics` and
a log line. `HandshakeQueue` is the outermost layer of the websocket stack
(`realtime.authentication.middleware.socket_stack`): a refusal costs no
Origin check, no credential lookup and no database or Redis work.

A handshake is in progress from the moment the socket enters this layer until
the first of:

- the application asks for the socket's second message, the one after
  `websocket.connect`: its connect handler has finished (the socket was
  accepted and got its `welcome`, or was accepted and waits for an `auth`
  frame, or was refused or closed). Channels' consumers, ours included, read
  one message at a time, so that call marks the end of the handshake's work;
- the application returns or raises.

So the count is the handshake work the worker has taken on and not finished:
sockets waiting for the session or token lookup, the database lane, Redis, the
group joins and the `welcome`. A connection still sending its request headers
has not entered the application and is not counted (HTTP_HEADER_TIMEOUT_SECONDS
bounds those).

A refusal is answered with HTTP 503, `Retry-After:
WS_HANDSHAKE_RETRY_AFTER_SECONDS` and `{"error": "overloaded", "detail": ...}`
where the server offers ASGI's WebSocket Denial Response extension (uvicorn;
daphne, `realtime.serve` and runserver through `realtime.adapter`), else by
accepting and closing with 1013 `overloaded` at once (1000 where the server
cannot send 1013: daphne without the adapter). Clients retry with jittered
backoff (docs/protocol.md, "Load shedding").

Only `receive` is wrapped, and by a plain function that hands back the
server's own awaitable: `send` stays the server's, which the pre-framed
writers (`realtime.adapter.writer_for`) recognise.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from django.conf import settings

from realtime import adapter
from realtime.operations import metrics
from realtime.operations.logs import log_event
from realtime.protocol import CloseCode, CloseReason

logger = logging.getLogger("realtime.handshakes")

# The ASGI extension that lets an application answer a handshake with an HTTP response.
DENIAL_RESPONSE = "websocket.http.response"


class _Queue:
    """This process's count, and what was refused since the last log line."""

    def __init__(self) -> None:
        self.in_progress = 0
        self.unlogged = 0  # refusals not yet in a log line
        self.logged_at: float | None = None


_queue = _Queue()


def in_progress() -> int:
    """Handshakes in progress in this process now."""
    return _queue.in_progress


metrics.HANDSHAKES_IN_PROGRESS.set_function(in_progress)


class _Handshake:
    """The `receive` the application gets: counts its calls until the handshake ends."""

    __slots__ = ("calls", "receive")

    def __init__(self, receive: Any) -> None:
        self.receive = receive
        self.calls = 0  # -1 once the handshake has ended

    def __call__(self) -> Any:
        if self.calls >= 0:
            self.calls += 1
            if self.calls == 2:  # the message after websocket.connect
                self.end()
        return self.receive()

    def end(self) -> None:
        if self.calls >= 0:
            self.calls = -1
            _queue.in_progress -= 1


class HandshakeQueue:
    """ASGI middleware: count each handshake in progress; past the limit, refuse at once."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        limit = settings.WS_HANDSHAKE_QUEUE_LIMIT
        if limit and _queue.in_progress >= limit:
            _note_refusal(limit)
            await refuse(scope, receive, send)
            return
        _queue.in_progress += 1
        handshake = _Handshake(receive)
        try:
            await self.inner(scope, handshake, send)
        finally:
            handshake.end()


async def refuse(scope: dict, receive: Any, send: Any) -> None:
    """Answer a handshake with 503 and Retry-After, or where the server cannot, accept and close 1013."""
    await receive()  # websocket.connect
    try:
        if DENIAL_RESPONSE in (scope.get("extensions") or {}):
            await _deny(send, settings.WS_HANDSHAKE_RETRY_AFTER_SECONDS)
        else:
            await send({"type": "websocket.accept"})
            await _close_overloaded(send)
    except Exception as exc:
        # A client that has left meanwhile needs no answer.
        if not adapter.is_closed_send_error(exc):
            raise


async def _deny(send: Any, retry_after: int) -> None:
    detail = f"too many handshakes in progress on this worker; retry in {retry_after} s"
    body = orjson.dumps({"error": str(CloseReason.OVERLOADED), "detail": detail})
    headers = [(b"retry-after", str(retry_after).encode()), (b"content-type", b"application/json")]
    await send({"type": "websocket.http.response.start", "status": 503, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


async def _close_overloaded(send: Any) -> None:
    # Plain int and str, as ASGI says: autobahn (daphne) refuses a str subclass as a reason.
    code, reason = int(CloseCode.OVERLOADED), str(CloseReason.OVERLOADED)
    close = {"type": "websocket.close", "code": code, "reason": reason}
    try:
        await send(close)
    except Exception as exc:
        if adapter.is_closed_send_error(exc):
            raise
        # daphne without the adapter: autobahn sends only 1000 and 3000-4999 and raises
        # for 1013. A plain close then; clients back off from it all the same.
        await send({"type": "websocket.close"})


def _note_refusal(limit: int) -> None:
    """Count a refusal; log the first, then one line per WS_ERROR_LOG_INTERVAL_SECONDS with the count.

    Under a reconnect storm a worker may refuse thousands of handshakes a second:
    a line each would flood the log. The metric counts every one.
    """
    metrics.HANDSHAKES_REFUSED.inc()
    _queue.unlogged += 1
    now = time.monotonic()
    logged_at = _queue.logged_at
    if logged_at is not None and now - logged_at < settings.WS_ERROR_LOG_INTERVAL_SECONDS:
        return
    log_event(
        logger,
        "handshakes_refused",
        level=logging.WARNING,
        count=_queue.unlogged,
        in_progress=_queue.in_progress,
        limit=limit,
    )
    _queue.unlogged = 0
    _queue.logged_at = now
