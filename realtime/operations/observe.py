"""What the base consumer and `push` report: metrics and one log line per event.

Kept out of `consumers.py` so the consumer carries only one-line calls.
Every log line names the endpoint and the user id; never a credential.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from typing import Any

from django.conf import settings

from realtime.operations import metrics
from realtime.operations.logs import log_event
from realtime.protocol import COMMITTED_AT

logger = logging.getLogger("realtime.socket")

# Frames are encoded by orjson with "type" first: read it without decoding.
_TYPE = re.compile(r'^\{"type":"([a-z_]{1,32})"')


def _user_id(consumer) -> Any:
    user = getattr(consumer, "user", None)
    return getattr(user, "pk", None)


def socket_accepted(consumer) -> None:
    consumer._observed_since = time.monotonic()
    metrics.CONNECTIONS.labels(consumer.endpoint).inc()
    metrics.OPEN_SOCKETS.labels(consumer.endpoint).inc()


def socket_authenticated(consumer) -> None:
    auth = consumer.scope.get("auth_method") or "token"
    log_event(logger, "socket_open", endpoint=consumer.endpoint, user=_user_id(consumer), auth=auth)


def socket_closed(consumer, code: Any) -> None:
    flush_errors(consumer)
    since = getattr(consumer, "_observed_since", None)
    if since is None:
        return  # never accepted, or already counted
    consumer._observed_since = None
    metrics.OPEN_SOCKETS.labels(consumer.endpoint).dec()
    metrics.CLOSES.labels(consumer.endpoint, str(code)).inc()
    log_event(
        logger,
        "socket_close",
        endpoint=consumer.endpoint,
        user=_user_id(consumer),
        code=code,
        seconds=round(time.monotonic() - since, 3),
    )


def frame_in(consumer, kind: str) -> None:
    metrics.FRAMES_IN.labels(consumer.endpoint, kind).inc()


def frame_out(consumer, frame: Any) -> None:
    if isinstance(frame, str):
        match = _TYPE.match(frame)
        kind = match.group(1) if match else "other"
    else:
        kind = str(frame.get("type", "other"))
    metrics.FRAMES_OUT.labels(consumer.endpoint, kind).inc()


@functools.cache
def _direct_counters(endpoint: str, kind: str) -> tuple[Any, Any]:
    return metrics.FRAMES_OUT.labels(endpoint, kind), metrics.FRAMES_DIRECT.labels(endpoint)


def frame_written_direct(endpoint: str, kind: str) -> None:
    """A frame of a known type went out on the fast path: no parsing, no label lookup per frame."""
    out, direct = _direct_counters(endpoint, kind)
    out.inc()
    direct.inc()


def error(consumer, code: Any) -> None:
    """Count every error frame; log the first of each interval and a summary of the rest.

    A client can send thousands of bad frames a second, and each gets its error
    frame; a log line for each would let it flood the log. So
    per socket: the first error is logged as `socket_error`, the others within
    WS_ERROR_LOG_INTERVAL_SECONDS are counted, and `socket_errors` reports them
    (count by code, and the socket's total) when the next interval starts or the
    socket closes: a burst costs two lines however long it is.
    """
    metrics.ERRORS.labels(consumer.endpoint, str(code)).inc()
    now = time.monotonic()
    consumer._errors_total = getattr(consumer, "_errors_total", 0) + 1
    since = getattr(consumer, "_errors_since", None)
    if since is not None and now - since < settings.WS_ERROR_LOG_INTERVAL_SECONDS:
        held = consumer._errors_held
        held[str(code)] = held.get(str(code), 0) + 1
        return
    flush_errors(consumer)
    consumer._errors_since = now
    consumer._errors_held = {}
    log_event(logger, "socket_error", endpoint=consumer.endpoint, user=_user_id(consumer), code=str(code))


def flush_errors(consumer) -> None:
    """Log the errors counted but not yet logged on this socket, if any."""
    held = getattr(consumer, "_errors_held", None)
    if not held:
        return
    consumer._errors_held = {}
    log_event(
        logger,
        "socket_errors",
        endpoint=consumer.endpoint,
        user=_user_id(consumer),
        count=sum(held.values()),
        codes=",".join(f"{code}:{n}" for code, n in sorted(held.items())),
        total=consumer._errors_total,
    )


def event_delivered(event: dict[str, Any]) -> None:
    """A push reached this worker's local sockets: commit-to-socket latency, once per worker."""
    committed = event.get(COMMITTED_AT)
    if isinstance(committed, float):
        metrics.PUSH_LATENCY.labels(str(event.get("type"))).observe(max(0.0, time.time() - committed))


def layer_failure(operation: str) -> None:
    metrics.LAYER_FAILURES.labels(operation).inc()
