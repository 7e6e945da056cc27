"""Prometheus metrics for the real-time service, served at `GET /metrics`.

One registry per worker process (prometheus-client's default registry), and
Prometheus scrapes every worker itself (see README, "Metrics"). We do not use
the client's multiprocess mode: that mode exists for servers that fork
workers from one parent sharing a directory (gunicorn); here each daphne
worker is its own process or container, its gauges (open sockets) would need
per-process bookkeeping files and cleanup of dead pids, and a per-worker
scrape also tells which worker is unwell. Sum across workers in PromQL.

Labels are only ever our own names (endpoint, frame and event types, error
and close codes), never user input, so their number stays small.

The endpoint is not public (contract v2): with METRICS_TOKEN set it needs
`Authorization: Bearer <METRICS_TOKEN>`, from anywhere; without it, only a
request from loopback that carries no forwarded-address header. The header
check matters: `--proxy-headers` (the image's command) makes daphne take the
client address from X-Forwarded-For, whose first entry the client writes.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from realtime.http import authorization, error_response, unauthorized

OPEN_SOCKETS = Gauge("relay_websocket_open", "WebSockets open now, by endpoint", ["endpoint"])
CONNECTIONS = Counter("relay_websocket_connections_total", "WebSockets accepted", ["endpoint"])
CLOSES = Counter("relay_websocket_closes_total", "WebSockets closed, by close code", ["endpoint", "code"])
FRAMES_IN = Counter("relay_frames_in_total", "Valid client frames, by type", ["endpoint", "type"])
FRAMES_OUT = Counter("relay_frames_out_total", "Frames sent to clients, by type", ["endpoint", "type"])
FRAMES_DIRECT = Counter(
    "relay_frames_direct_total",
    "Frames framed once per worker and written straight to the connection (part of relay_frames_out_total)",
    ["endpoint"],
)
ERRORS = Counter("relay_errors_total", "`error` frames sent, by error code", ["endpoint", "code"])
PUSH_LATENCY = Histogram(
    "relay_push_latency_seconds",
    "From the writing transaction's commit to the event handled on a socket (wall clocks; see README)",
    ["event"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PUSH_SEND = Histogram(
    "relay_push_send_seconds",
    "Time to hand one commit's events to the channel layer (group_send calls)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LAYER_FAILURES = Counter(
    "relay_channel_layer_failures_total", "Channel-layer operations that failed", ["operation"]
)
DRAINING = Gauge("relay_draining", "1 while this worker drains after SIGTERM")
# The handshake queue (realtime.handshake_queue; the gauge reads its count at scrape time).
HANDSHAKES_IN_PROGRESS = Gauge(
    "relay_websocket_handshakes_in_progress",
    "WebSocket handshakes this worker has taken in and not finished (docs/protocol.md, 'Load shedding')",
)
HANDSHAKES_REFUSED = Counter(
    "relay_websocket_handshakes_refused_total",
    "WebSocket handshakes refused at once: WS_HANDSHAKE_QUEUE_LIMIT were in progress",
)


LOOPBACK = frozenset({"127.0.0.1", "::1"})
# Headers by which a proxy (or a client pretending to be one) names another client address.
FORWARDED_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """Why this request may not read the metrics, as a JSON error; None when it may."""
    token = settings.METRICS_TOKEN
    if token:
        auth = authorization(request)
        if auth is None or auth[0] != "bearer":
            return unauthorized("send Authorization: Bearer <METRICS_TOKEN>", "Bearer")
        # Constant time: the comparison must not tell how much of a guess was right.
        if not hmac.compare_digest(auth[1].encode(), token.encode()):
            return unauthorized("wrong metrics token", 'Bearer error="invalid_token"')
        return None
    forwarded = any(name in request.headers for name in FORWARDED_HEADERS)
    if request.META.get("REMOTE_ADDR") not in LOOPBACK or forwarded:
        return error_response(403, "forbidden", "metrics are served to loopback only (or set METRICS_TOKEN)")
    return None


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    refused = _refusal(request)
    if refused is not None:
        return refused
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
