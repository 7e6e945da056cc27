"""`GET /metrics` is not public (contract v2): METRICS_TOKEN as a bearer token, or loopback only.

Through the real ASGI application, with the client address an ASGI server
would put in the scope (REMOTE_ADDR); realtime/tests/test_edge_servers.py
checks the same under each real server.
"""

from __future__ import annotations

import logging

import orjson
import pytest

from testsupport.asgi import http_from

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-token-for-tests-0123456789"


async def get_metrics(client: str = "127.0.0.1", headers: dict[str, str] | None = None):
    """GET /metrics through config.asgi's application from `client`: (status, body, headers)."""
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    status, answer, body = await http_from(client, "GET", "/metrics", headers=raw)
    return status, body, answer


async def test_loopback_reads_the_metrics_when_no_token_is_set(settings):
    """No METRICS_TOKEN: 127.0.0.1 and ::1 get the Prometheus text."""
    settings.METRICS_TOKEN = ""
    for address in ("127.0.0.1", "::1"):
        status, body, headers = await get_metrics(address)
        assert status == 200
        assert headers["content-type"].startswith("text/plain")
        assert b"relay_websocket_open" in body


async def test_other_addresses_are_refused_when_no_token_is_set(settings):
    """No METRICS_TOKEN: another address, or loopback with a forwarded-address header, gets 403 JSON."""
    settings.METRICS_TOKEN = ""
    refused = [
        await get_metrics("203.0.113.9"),
        await get_metrics("10.0.0.2", {"X-Forwarded-For": "127.0.0.1"}),
        await get_metrics("127.0.0.1", {"X-Forwarded-For": "127.0.0.1"}),
        await get_metrics("127.0.0.1", {"Forwarded": "for=127.0.0.1"}),
        await get_metrics("127.0.0.1", {"X-Real-IP": "127.0.0.1"}),
    ]
    for status, body, _ in refused:
        assert status == 403
        assert orjson.loads(body)["error"] == "forbidden"
        assert b"relay_websocket_open" not in body


async def test_with_a_token_set_only_the_right_bearer_reads_the_metrics(settings, caplog):
    """METRICS_TOKEN set: none or a wrong one gets 401 JSON, from loopback too; the right one 200 anywhere."""
    settings.METRICS_TOKEN = TOKEN
    with caplog.at_level(logging.DEBUG):
        missing = await get_metrics("127.0.0.1")
        wrong = await get_metrics("127.0.0.1", {"Authorization": f"Bearer {TOKEN}x"})
        prefix = await get_metrics("127.0.0.1", {"Authorization": f"Bearer {TOKEN[:-1]}"})
        other_scheme = await get_metrics("127.0.0.1", {"Authorization": f"Api-Key {TOKEN}"})
        right_remote = await get_metrics("203.0.113.9", {"Authorization": f"Bearer {TOKEN}"})
        right_loopback = await get_metrics("127.0.0.1", {"Authorization": f"bearer {TOKEN}"})
    for status, body, headers in (missing, wrong, prefix, other_scheme):
        assert status == 401
        assert orjson.loads(body)["error"] == "not_authenticated"
        assert headers["www-authenticate"].startswith("Bearer")
    for status, body, _ in (right_remote, right_loopback):
        assert status == 200
        assert b"relay_websocket_open" in body
    assert TOKEN[:-1] not in caplog.text  # the token, right or wrong, is never logged
