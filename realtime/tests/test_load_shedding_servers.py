"""Load shedding under every server the project runs under (realtime.launcher.SERVERS).

One worker per server, each with a handshake queue of two (WS_HANDSHAKE_QUEUE_LIMIT),
started together and shared by the module's tests. Handshakes are held in
progress by locking the tables their credential lookups read
(testsupport.handshakes): the queue fills as it would behind a slow database,
and a further handshake is refused at once, whoever sends it, with 503 and
Retry-After; once the held ones finish, sockets get in again.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from realtime.authentication.tokens import issue_token
from realtime.launcher import SERVERS, Worker
from testsupport.asgi import ORIGIN
from testsupport.auth import session_cookie
from testsupport.handshakes import credentials_locked, handshake_queue, until_in_progress
from testsupport.processes import server_env
from testsupport.servers import every_server, receive_json

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

LIMIT = 2
RETRY_AFTER = 3


@pytest.fixture(scope="module")
def servers(django_db_setup, tmp_path_factory):
    """Every server of SERVERS on the test database with a queue of LIMIT, started at once; {name: Worker}."""
    env = server_env(uuid.uuid4().hex[:10]) | {
        "WS_HANDSHAKE_QUEUE_LIMIT": str(LIMIT),
        "WS_HANDSHAKE_RETRY_AFTER_SECONDS": str(RETRY_AFTER),
        "WS_ERROR_LOG_INTERVAL_SECONDS": "0",  # a log line for every refusal
    }
    with every_server(env, tmp_path_factory.mktemp("shedding")) as started:
        yield started


async def cookies_of(make_user, prefix: str, count: int) -> list[str]:
    """Session keys of `count` new users (made before the credential tables are locked)."""

    def make() -> list[str]:
        return [session_cookie(make_user(f"{prefix}{n}")) for n in range(count)]

    return await database_sync_to_async(make)()


def browser(worker: Worker, cookie: str, path: str = "/ws/notifications/", origin: str = ORIGIN):
    """A socket opening as a logged-in browser's does (awaitable)."""
    headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}
    return connect(f"{worker.ws}{path}", origin=origin, additional_headers=headers, open_timeout=20)


async def refusal(opening) -> tuple[int, str | None, dict]:
    """The status, Retry-After and JSON body a handshake that must be refused got."""
    with pytest.raises(InvalidStatus) as refused:
        socket = await opening
        await socket.close()
    response = refused.value.response
    return response.status_code, response.headers.get("Retry-After"), json.loads(response.body)


@pytest.mark.parametrize("server", list(SERVERS))
async def test_a_full_handshake_queue_refuses_at_once_with_503_and_takes_sockets_again_once_drained(
    server, servers, make_user, alice
):
    """Two handshakes held: a browser, a token script, a foreign Origin and an anonymous socket get 503."""
    worker = servers[server]
    held_cookies = await cookies_of(make_user, "held", LIMIT)
    [cookie] = await cookies_of(make_user, "refused", 1)
    token = (await database_sync_to_async(issue_token)(user=alice)).access
    _, refused_before = await asyncio.to_thread(handshake_queue, worker.url)
    mark = worker.log_size()

    async with credentials_locked():
        held = [asyncio.ensure_future(browser(worker, key)) for key in held_cookies]
        await until_in_progress(worker.url, LIMIT)
        attempts = [
            browser(worker, cookie),
            connect(f"{worker.ws}/ws/chat/lobby/", additional_headers={"Authorization": f"Bearer {token}"}),
            browser(worker, cookie, origin="http://evil.example"),  # the queue comes before the Origin check
            connect(f"{worker.ws}/ws/live/"),
        ]
        answers = [await refusal(opening) for opening in attempts]
        # Refused while the lookups still wait on the lock: nothing was looked up for them.
        assert not any(task.done() for task in held)
        assert (await asyncio.to_thread(handshake_queue, worker.url))[0] == LIMIT

    expected = (503, str(RETRY_AFTER), "overloaded")
    assert [(status, retry, body["error"]) for status, retry, body in answers] == [expected] * len(attempts)
    for socket in await asyncio.gather(*held):
        assert (await receive_json(socket, "welcome", 20))["unread"] == 0
        await socket.close()
    await until_in_progress(worker.url, 0)
    assert (await asyncio.to_thread(handshake_queue, worker.url))[1] == refused_before + len(attempts)

    # Drained: the refused browser gets in.
    socket = await browser(worker, cookie)
    assert (await receive_json(socket, "welcome", 20))["user"]["username"] == "refused0"
    await socket.close()
    log = worker.log_since(mark)
    assert log.count("event=handshakes_refused count=1 in_progress=2 limit=2") == len(attempts), log
    assert "Traceback" not in log, log


async def send_upgrade_then_leave(worker: Worker, cookie: str) -> None:
    """A browser's opening handshake, then the connection closed before any answer."""
    _, writer = await asyncio.open_connection("127.0.0.1", worker.port)
    writer.write(
        (
            "GET /ws/notifications/ HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{worker.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {ORIGIN}\r\nCookie: {settings.SESSION_COOKIE_NAME}={cookie}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    await until_in_progress(worker.url, 1)
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("server", list(SERVERS))
async def test_a_handshake_whose_client_leaves_while_it_waits_leaves_the_queue_when_its_work_ends(
    server, servers, make_user
):
    """A client gives up during its lookup: the worker still counts it, then lets it go; no traceback."""
    worker = servers[server]
    [cookie] = await cookies_of(make_user, "leaver", 1)
    mark = worker.log_size()
    async with credentials_locked():
        await send_upgrade_then_leave(worker, cookie)
        assert (await asyncio.to_thread(handshake_queue, worker.url))[0] == 1
    await until_in_progress(worker.url, 0)
    socket = await browser(worker, cookie)
    assert (await receive_json(socket, "welcome", 20))["user"]["username"] == "leaver0"
    await socket.close()
    log = worker.log_since(mark)
    assert "Traceback" not in log, log


@pytest.mark.parametrize("server", list(SERVERS))
async def test_a_socket_waiting_for_its_auth_frame_is_not_in_the_queue(server, servers, alice):
    """Accepted without credentials, a socket's handshake is over: it holds no place while it waits."""
    worker = servers[server]
    sockets = [await connect(f"{worker.ws}/ws/notifications/", open_timeout=20) for _ in range(LIMIT + 1)]
    await until_in_progress(worker.url, 0)
    token = (await database_sync_to_async(issue_token)(user=alice)).access
    async with connect(
        f"{worker.ws}/ws/notifications/", additional_headers={"Authorization": f"Bearer {token}"}
    ) as socket:
        assert (await receive_json(socket, "welcome", 20))["user"]["username"] == "alice"
    for waiting in sockets:
        await waiting.send(json.dumps({"type": "auth", "token": token}))
        assert (await receive_json(waiting, "welcome", 20))["user"]["username"] == "alice"
        await waiting.close()
