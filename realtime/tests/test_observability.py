"""Metrics at /metrics, structured log lines, and the in-process drain."""

from __future__ import annotations

import json
import logging

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from prometheus_client import REGISTRY

from notifications.services import notify
from realtime.adapter import drain
from realtime.operations.logs import JsonFormatter, log_event
from testsupport.asgi import receive_type
from testsupport.auth import session_cookie


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def no_drain():
    drain.reset()
    yield
    drain.reset()


@pytest.mark.django_db
def test_metrics_endpoint_serves_prometheus_text(client):
    """GET /metrics answers in the Prometheus text format with the service's metrics."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    for name in (
        "relay_websocket_open",
        "relay_frames_in_total",
        "relay_frames_out_total",
        "relay_errors_total",
        "relay_push_latency_seconds",
        "relay_channel_layer_failures_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name


@pytest.mark.django_db(transaction=True)
async def test_socket_life_is_counted(socket_for, alice, no_drain):
    """Open sockets, frames in and out, error codes and push latency move as a socket is used."""
    opened = sample("relay_websocket_open", endpoint="notifications")
    welcomes = sample("relay_frames_out_total", endpoint="notifications", type="welcome")
    pings = sample("relay_frames_in_total", endpoint="notifications", type="ping")
    bad_json = sample("relay_errors_total", endpoint="notifications", code="invalid_json")
    pushes = sample("relay_push_latency_seconds_count", event="push.notification")

    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    assert sample("relay_websocket_open", endpoint="notifications") == opened + 1
    assert sample("relay_frames_out_total", endpoint="notifications", type="welcome") == welcomes + 1

    await socket.send_json_to({"type": "ping"})
    await receive_type(socket, "pong")
    assert sample("relay_frames_in_total", endpoint="notifications", type="ping") == pings + 1

    await socket.send_to(text_data="{nope")
    await receive_type(socket, "error")
    assert sample("relay_errors_total", endpoint="notifications", code="invalid_json") == bad_json + 1

    await sync_to_async(notify)(users=alice, title="measured")
    await receive_type(socket, "notification")
    assert sample("relay_push_latency_seconds_count", event="push.notification") == pushes + 1

    await socket.disconnect()
    assert sample("relay_websocket_open", endpoint="notifications") == opened


@pytest.mark.django_db(transaction=True)
async def test_log_lines_name_the_user_and_never_the_session(socket_for, alice, caplog, no_drain):
    """One key=value line on open, error and close, with the user id and no cookie."""
    caplog.set_level(logging.INFO, logger="realtime.socket")
    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    await socket.send_to(text_data="[]")
    await receive_type(socket, "error")
    await socket.disconnect()
    lines = [r.getMessage() for r in caplog.records if r.name == "realtime.socket"]
    assert f"event=socket_open endpoint=notifications user={alice.pk} auth=session" in lines
    assert f"event=socket_error endpoint=notifications user={alice.pk} code=invalid_message" in lines
    assert any(
        line.startswith(f"event=socket_close endpoint=notifications user={alice.pk} code=") for line in lines
    )
    cookie = await sync_to_async(session_cookie)(alice)
    assert not any(cookie in line for line in lines)


def test_json_format_carries_the_fields():
    """LOG_FORMAT=json: one JSON object per line with the event's fields as keys."""
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    logger = logging.getLogger("realtime.test-json")
    handler = Keep()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        log_event(logger, "socket_close", endpoint="chat", user=7, code=1012)
    finally:
        logger.removeHandler(handler)
    line = json.loads(records[0])
    assert line["event"] == "socket_close"
    assert (line["endpoint"], line["user"], line["code"]) == ("chat", 7, 1012)
    assert line["message"] == "event=socket_close endpoint=chat user=7 code=1012"
    assert line["level"] == "INFO" and line["time"].endswith("+00:00")


def test_json_formatter_is_selectable_in_settings():
    """LOG_FORMAT picks the console formatter."""
    assert settings.LOGGING["handlers"]["console"]["formatter"] == settings.LOG_FORMAT
    assert settings.LOGGING["formatters"]["json"]["()"] == "realtime.operations.logs.JsonFormatter"


@pytest.mark.django_db(transaction=True)
async def test_drain_closes_open_sockets_with_1012_and_refuses_new_ones(socket_for, alice, client, no_drain):
    """drain(): open sockets get 1012, a new socket gets 1012 at once, /readyz says draining."""
    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    closed = await drain.drain(grace=0, close_timeout=0.2)
    assert closed == 1
    message = await socket.receive_output(timeout=2)
    assert message == {"type": "websocket.close", "code": 1012, "reason": "server_restarting"}

    late = await socket_for("/ws/notifications/", alice)
    message = await late.receive_output(timeout=2)
    assert (message["type"], message["code"]) == ("websocket.close", 1012)

    response = await sync_to_async(client.get)("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "draining"}
