"""The login throttle under every server of SERVERS (issue 14 item 2).

What a server does to the client's address decides the per-address count:
uvicorn, by default, takes X-Forwarded-For from a loopback peer as the client
(its --proxy-headers), which would let a client on the proxy's host pick a new
address per attempt. Each server gets a key prefix of its own: its clients all
come from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlencode

import pytest
from asgiref.sync import sync_to_async

from realtime.launcher import SERVERS, Worker
from testsupport.auth import DEMO_PASSWORD
from testsupport.processes import server_env
from testsupport.servers import every_server

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

WRONG = "not-the-password-7713"
CSRF = "c" * 32


@pytest.fixture(scope="module")
def servers(django_db_setup, tmp_path_factory):
    """Every server of SERVERS on the test database, started at once; {name: Worker}."""
    logs = tmp_path_factory.mktemp("throttle-servers")
    tag = uuid.uuid4().hex[:10]

    def env(name: str) -> dict[str, str]:
        values = server_env(tag) | {
            "LOG_LEVEL": "INFO",
            "LOGIN_THROTTLE_KEY_PREFIX": f"test-login-{tag}-{name}",
            "LOGIN_FAILURES_MAX": "10",
            "LOGIN_FAILURES_WINDOW_SECONDS": "300",
        }
        values.pop("TRUSTED_PROXIES", None)
        return values

    with every_server(env, logs) as started:
        yield started


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback test URL
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def token(server: Worker, username: str, password: str, forwarded: str):
    body = json.dumps({"username": username, "password": password}).encode()
    headers = {"Content-Type": "application/json", "X-Forwarded-For": forwarded}
    return post(f"{server.url}/api/token/", body, headers)


def form_login(server: Worker, username: str, password: str, forwarded: str):
    body = urlencode({"username": username, "password": password, "csrfmiddlewaretoken": CSRF}).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": f"csrftoken={CSRF}",
        "X-Forwarded-For": forwarded,
    }
    return post(f"{server.url}/accounts/login/", body, headers)


@pytest.mark.parametrize("name", list(SERVERS))
async def test_forged_forwarded_for_does_not_escape_the_address_count(servers, make_user, name):
    """A client varying X-Forwarded-For is still one address: the 11th attempt gets 429 with Retry-After."""
    server = servers[name]
    users = await sync_to_async(lambda: [make_user(f"{name[:8]}-{n}") for n in range(12)])()
    for n in range(10):
        status, _, body = await asyncio.to_thread(token, server, users[n].username, WRONG, f"192.0.2.{n + 1}")
        assert status == 401, body
    status, headers, body = await asyncio.to_thread(
        token, server, users[10].username, DEMO_PASSWORD, "192.0.2.50"
    )
    assert status == 429, body
    assert json.loads(body)["error"] == "rate_limited"
    assert 0 < int(headers["Retry-After"]) <= 300, headers
    status, headers, page = await asyncio.to_thread(
        form_login, server, users[11].username, DEMO_PASSWORD, "192.0.2.51"
    )
    assert status == 429 and "rate_limited" in page, status
    assert 0 < int(headers["Retry-After"]) <= 300, headers
    log = server.log()
    assert WRONG not in log and DEMO_PASSWORD not in log
    assert "Traceback" not in log, log
