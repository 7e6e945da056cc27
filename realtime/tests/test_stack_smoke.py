"""`make stack` for real: two workers (and nginx when installed) on loopback ports.

A socket on worker A hears what is written through worker B and through a
separate `manage.py` process; stopping the stack drains worker A's socket
with 1012. The stack runs against this test's database and Redis prefix.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import urllib.request

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from websockets.exceptions import ConnectionClosed

from conftest import run_manage, session_cookie, subprocess_env
from realtime.tests.servers import browser_socket, free_port, http_get, receive_json

pytestmark = [pytest.mark.stack, pytest.mark.redis, pytest.mark.postgres]


async def stack(*args: str) -> tuple[int, str, str]:
    """Run deploy/stack.py; bounded (start itself waits at most --timeout for /readyz)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "deploy/stack.py",
        *args,
        env=subprocess_env(),
        cwd=str(settings.BASE_DIR),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode, out.decode(), err.decode()


def post_json(url: str, body: dict, session_key: str) -> dict:
    """A browser-like JSON POST: session cookie plus the double-submit CSRF token."""
    token = secrets.token_hex(16)
    request = urllib.request.Request(  # noqa: S310 - loopback URL
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Cookie": f"{settings.SESSION_COOKIE_NAME}={session_key}; {settings.CSRF_COOKIE_NAME}={token}",
            "X-CSRFToken": token,
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


@pytest.mark.django_db(transaction=True)
async def test_a_write_through_one_worker_reaches_a_socket_on_the_other(alice, tmp_path):
    port_a, port_b, proxy_port = free_port(), free_port(), free_port()
    directory = tmp_path / "stack"
    where = ["--dir", str(directory)]
    code, out, err = await stack(
        "start", *where, "--ports", f"{port_a},{port_b}", "--proxy-port", str(proxy_port), "--timeout", "60"
    )
    assert code == 0, err
    started = json.loads(out.strip().splitlines()[-1])
    try:
        assert started["workers"] == [f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"]
        on_a = await browser_socket(f"ws://127.0.0.1:{port_a}/ws/notifications/", alice)
        await receive_json(on_a, "welcome")

        # 1. An HTTP write served by worker B is pushed to the socket on worker A.
        key = await database_sync_to_async(session_cookie)(alice)
        answer = await asyncio.to_thread(
            post_json, f"http://127.0.0.1:{port_b}/api/notifications/read/", {"all": True}, key
        )
        assert answer == {"unread": 0}
        frame = await receive_json(on_a, "read")
        assert (frame["all"], frame["unread"]) == (True, 0)

        # 2. Through the proxy too, when there is one; and from a third process.
        via_proxy = None
        if started["proxy"]:
            via_proxy = await browser_socket(f"ws://127.0.0.1:{proxy_port}/ws/notifications/", alice)
            await receive_json(via_proxy, "welcome")
            assert http_get(f"{started['proxy']}/metrics")[0] == 404  # metrics are per worker
        await run_manage("notify", "--user", "alice", "--title", "across workers")
        for socket in filter(None, (on_a, via_proxy)):
            frame = await receive_json(socket, "notification", wait=20)
            assert frame["notification"]["title"] == "across workers"

        status, metrics = http_get(f"http://127.0.0.1:{port_a}/metrics")
        assert status == 200
        assert 'relay_websocket_open{endpoint="notifications"} 1.0' in metrics
        code, out, _ = await stack("status", *where)
        assert code == 0 and json.loads(out)["running"] is True
    finally:
        code, _, err = await stack("stop", *where)
    assert code == 0, err
    # Stopping drains: worker A closed its socket with 1012 rather than dropping it.
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(on_a.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    code, out, _ = await stack("status", *where)
    assert code == 3 and json.loads(out) == {"running": False}
