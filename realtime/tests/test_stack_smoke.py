"""`make stack` for real: two workers and nginx on loopback ports.

A socket on worker A hears what is written through worker B and through a
separate `manage.py` process; stopping the stack drains worker A's socket
with 1012. A browser logs in through nginx (the form and the admin, at
localhost and 127.0.0.1) and its pages' sockets come up there. The stack runs
against this test's database and Redis prefix. nginx is required in CI
(.ci/run installs it); elsewhere the proxy parts are skipped without it.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sys
import urllib.request
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from playwright.async_api import expect
from websockets.exceptions import ConnectionClosed

from realtime.launcher import free_port, http_get
from testsupport.auth import DEMO_PASSWORD, session_cookie
from testsupport.processes import run_manage, subprocess_env
from testsupport.run import IN_CI
from testsupport.servers import browser_socket, receive_json

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


async def start_stack(directory: Path) -> dict:
    """`stack.py start` on free ports; its summary. Without nginx: fails in CI, else no proxy."""
    ports = f"{free_port()},{free_port()}"
    where = ["--dir", str(directory), "--ports", ports, "--proxy-port", str(free_port())]
    code, out, err = await stack("start", *where, "--timeout", "60")
    assert code == 0, err
    started = json.loads(out.strip().splitlines()[-1])
    if started["proxy"] is None and IN_CI:
        await stack("stop", "--dir", str(directory))
        pytest.fail(f"the stack started without nginx, which CI installs (.ci/run): {err}")
    return started


@pytest.mark.django_db(transaction=True)
async def test_a_write_through_one_worker_reaches_a_socket_on_the_other(alice, tmp_path):
    """Worker B's writes, the proxy's socket and a manage.py process all reach worker A; stop drains."""
    directory = tmp_path / "stack"
    where = ["--dir", str(directory)]
    started = await start_stack(directory)
    port_a, port_b = (int(url.rsplit(":", 1)[1]) for url in started["workers"])
    proxy_port = int(started["proxy"].rsplit(":", 1)[1]) if started["proxy"] else None
    try:
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

        # 2. Through the proxy too (required in CI); and from a third process.
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


@pytest.fixture
def admin_user(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


async def log_in(context, path: str, username: str, landing: str):
    """Fill a login form like a person and submit it; the page it lands on, checked."""
    page = await context.new_page()
    await page.goto(path)
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(DEMO_PASSWORD)
    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name="Log in").click()
    response = await navigation.value
    # A refused login is Django's 403 page ("CSRF verification failed ... Origin checking failed").
    assert response.status == 200, f"{response.status} {await page.locator('body').inner_text()}"
    await expect(page).to_have_url(re.compile(re.escape(landing) + "$"))
    return page


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
async def test_logging_in_through_the_proxy_at_localhost_and_127_0_0_1(alice, admin_user, browser, tmp_path):
    """Through nginx, the login form and the admin login work and the pages' sockets open, on both hosts."""
    directory = tmp_path / "stack"
    started = await start_stack(directory)
    try:
        if started["proxy"] is None:
            pytest.skip("nginx is not installed (the stack served from its workers)")
        proxy_port = started["proxy"].rsplit(":", 1)[1]
        inboxes = []
        for host in ("localhost", "127.0.0.1"):
            base = f"http://{host}:{proxy_port}"
            # A context per login: its own cookies, as two browsers would have.
            reader = await browser.new_context(base_url=base)
            admin = await browser.new_context(base_url=base)
            inbox = await log_in(reader, "/accounts/login/", "alice", base + "/notifications/")
            console = await log_in(admin, "/admin/login/?next=/admin/", "root", base + "/admin/")
            # Each page's bell opens a cookie socket through nginx; its Origin is the page's.
            for page in (inbox, console):
                await expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
            inboxes.append(inbox)

        await run_manage("notify", "--user", "alice", "--title", "through the proxy")
        for inbox in inboxes:
            await expect(inbox.locator("#bell-badge")).to_have_text("1")
            await expect(inbox.locator("#inbox li .note-title")).to_have_text("through the proxy")
    finally:
        code, _, err = await stack("stop", "--dir", str(directory))
    assert code == 0, err
