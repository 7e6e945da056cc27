"""Issue 14 items 9 and 10 over HTTP and the socket, through the full ASGI application.

The Content-Security-Policy header (browsers reporting no violation is in the
browser tests' shared fixture), the removed password-reset pages, JSON 404s
under /api/, and a burst of bad frames that no longer floods the log.
"""

from __future__ import annotations

import logging

import pytest

from config.csp import socket_sources
from realtime.operations.logs import FIELDS
from testsupport.asgi import http, receive_type

pytestmark = pytest.mark.django_db(transaction=True)


def directives(header: str) -> dict[str, list[str]]:
    parsed = {}
    for part in header.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/", "/api/notifications/"])
async def test_every_response_carries_a_strict_content_security_policy(path):
    """Pages, admin and API send a CSP: scripts from the site only, sockets to its hosts, no framing."""
    _, _, headers = await http("GET", path)
    policy = directives(headers["content-security-policy"])
    assert policy["script-src"] == ["'self'"]
    assert policy["default-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["connect-src"][0] == "'self'"
    for host in ("localhost", "127.0.0.1"):  # DJANGO_ALLOWED_HOSTS (the default here)
        assert {f"ws://{host}:*", f"wss://{host}:*"} <= set(policy["connect-src"])
    assert "'unsafe-inline'" not in headers["content-security-policy"]
    assert "'unsafe-eval'" not in headers["content-security-policy"]


def test_socket_sources_follow_the_allowed_hosts_syntax():
    """A subdomain pattern covers the domain and its subdomains, `*` any host; IPv6 is left to 'self'."""
    assert socket_sources([".example.com", "[::1]"]) == [
        "ws://*.example.com:*",
        "wss://*.example.com:*",
        "ws://example.com:*",
        "wss://example.com:*",
    ]
    assert socket_sources(["localhost", "*"]) == ["ws:", "wss:"]


@pytest.mark.parametrize(
    "path",
    [
        "/accounts/password_reset/",
        "/accounts/password_reset/done/",
        "/accounts/reset/MQ/set-password/",
        "/accounts/password_change/",
    ],
)
async def test_password_reset_and_change_pages_are_gone(path, caplog):
    """The mail-less reset and change pages answer 404 and log nothing at ERROR (no traceback)."""
    caplog.set_level(logging.INFO)
    status, _, _ = await http("GET", path)
    assert status == 404
    status, _, _ = await http("POST", path, body=b"email=alice%40example.com", content_type="text/plain")
    assert status == 404
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/nope/"),
        ("GET", "/api/notifications/9/"),
        ("POST", "/api/publish/nothing/"),
        ("DELETE", "/api/"),
        ("GET", "/api/chat/rooms/lobby/messages/extra/"),
    ],
)
async def test_an_unknown_api_path_is_a_json_404(method, path):
    """Any method to a path under /api/ that no endpoint serves: 404 {"error": "not_found", "detail"}."""
    status, body, headers = await http(method, path, body={"x": 1} if method == "POST" else None)
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert body["error"] == "not_found"
    assert isinstance(body["detail"], str)


async def test_an_api_path_without_its_slash_is_a_json_404_that_names_the_endpoint():
    """`POST /api/token` (no slash) is a JSON 404 pointing at /api/token/, not a redirect a POST loses."""
    status, body, _ = await http("POST", "/api/token", body={"username": "a", "password": "b"})
    assert (status, body["error"]) == (404, "not_found")
    assert "/api/token/" in body["detail"]


async def test_a_burst_of_bad_frames_is_logged_in_a_bounded_number_of_lines(
    socket_for, alice, settings, caplog
):
    """2,500 bad frames on one socket: each gets its error frame; the log, at most 5 lines with the count."""
    settings.WS_ERROR_LOG_INTERVAL_SECONDS = 600  # the whole burst in one interval, however slow the machine
    caplog.set_level(logging.INFO)
    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    for _ in range(2500):
        await socket.send_to(text_data="{not json")
    for _ in range(2500):
        assert (await receive_type(socket, "error"))["code"] == "invalid_json"
    await socket.disconnect()

    lines = [r for r in caplog.records if r.name.startswith("realtime.")]
    assert len(lines) <= 5, [r.getMessage() for r in lines]
    events = [
        getattr(r, FIELDS)
        for r in lines
        if getattr(r, FIELDS, {}).get("event", "").startswith("socket_error")
    ]
    logged = sum(1 if e["event"] == "socket_error" else e["count"] for e in events)
    assert logged == 2500
    summary = events[-1]
    assert (summary["event"], summary["codes"], summary["total"]) == (
        "socket_errors",
        "invalid_json:2499",
        2500,
    )
