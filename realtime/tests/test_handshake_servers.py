"""The handshake under every server the project runs under (realtime.tests.servers.SERVERS).

One process per server, started together and shared by the module's tests:
clients that drop right after the 101, malformed Origin headers, a refused
bearer token.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chat import services as chat_services
from conftest import ORIGIN, server_env, session_cookie
from realtime.tests.faults import poll
from realtime.tests.servers import SERVERS, ServerProcess, browser_socket, handshake, open_sockets

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

# The four, then others no browser would send.
MALFORMED_ORIGINS = [
    "http://127.0.0.1:99999",
    "http://127.0.0.1:port",
    "http://[::1",
    "http://127.0.0.1:{port}.evil.example",
    "http://localhost:-1",
    "http://[::1]:99999",
    "http://[not-an-address]",
    "http://localhost:8000:8000",
    "http://localhost:8000/path",
    "http://localhost:8000?query",
    "http://evil.example@localhost:8000",
    "http://local\thost:8000",
    "localhost:8000",
    "http://",
    "null",
    "",
]
# Plain daphne: autobahn parses the Origin before the application sees the
# handshake and answers one it cannot parse with 400 itself (no traceback).
# realtime.serve's protocol class turns that into 403; plain daphne runs
# autobahn's own until that class is installed there too (issue 13, item 1).
REFUSED_BY_AUTOBAHN = 400


@pytest.fixture(scope="module")
def servers(django_db_setup, tmp_path_factory):
    """Every server of SERVERS on the test database, started at once; {name: ServerProcess}."""
    logs = tmp_path_factory.mktemp("servers")
    env = server_env(uuid.uuid4().hex[:10]) | {
        "LOG_LEVEL": "INFO",
        # A scheme pattern first: Channels' check of one raised on a malformed port.
        "WS_ALLOWED_ORIGINS": f"{ORIGIN},127.0.0.1",
        # Far longer than a test: an entry left behind must not expire before the check.
        "PRESENCE_TTL_SECONDS": "600",
    }
    started = {name: ServerProcess(name, env, logs / f"{name}.log") for name in SERVERS}
    try:
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


async def drop_after_101(port: int, path: str, cookie: str) -> None:
    """A browser's handshake, then the TCP connection closed as soon as the 101 is read."""
    status, _, writer = await handshake(
        port, path, {"Origin": ORIGIN, "Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}
    )
    writer.close()
    await writer.wait_closed()
    assert status == 101


async def online_in_lobby(server: ServerProcess, user) -> list[str]:
    """`online` of the welcome a fresh chat socket of `user` gets in the lobby."""
    socket = await browser_socket(f"{server.ws}/ws/chat/lobby/", user)
    try:
        welcome = json.loads(await asyncio.wait_for(socket.recv(), 10))
    finally:
        await socket.close()
    assert welcome["type"] == "welcome", welcome
    return welcome["online"]


@pytest.mark.parametrize("server", list(SERVERS))
async def test_clients_that_drop_right_after_the_101_leave_nothing_behind(server, servers, make_user, bob):
    """60 drops: the open-socket gauge returns to its value before, the user is not online, no traceback."""
    worker = servers[server]
    dropper = await database_sync_to_async(make_user)("dropper")
    await database_sync_to_async(chat_services.create_room)(slug="lobby", title="Lobby")
    cookie = await database_sync_to_async(session_cookie)(dropper)
    mark = worker.log_size()
    before = await asyncio.to_thread(open_sockets, worker.base)

    paths = ["/ws/chat/lobby/", "/ws/notifications/"]
    gate = asyncio.Semaphore(10)

    async def drop(n: int) -> None:
        async with gate:
            await drop_after_101(worker.port, paths[n % len(paths)], cookie)

    await asyncio.gather(*(drop(n) for n in range(60)))

    async def gauge_back():
        now = await asyncio.to_thread(open_sockets, worker.base)
        return all(now.get(endpoint, 0) == before.get(endpoint, 0) for endpoint in ("chat", "notifications"))

    await poll(gauge_back, seconds=20, what=f"open-socket gauge back to {before}")

    async def dropper_offline():
        return "dropper" not in await online_in_lobby(worker, bob)

    await poll(dropper_offline, seconds=20, what="the user who dropped is no longer online")
    log = worker.log_since(mark)
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log


@pytest.mark.parametrize("server", list(SERVERS))
async def test_a_malformed_origin_is_refused_with_403(server, servers, alice):
    """Each malformed Origin, with a valid session cookie, is refused (403; see above) and no traceback."""
    worker = servers[server]
    cookie = await database_sync_to_async(session_cookie)(alice)
    mark = worker.log_size()

    async def status(origin: str) -> int:
        headers = {"Origin": origin, "Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}
        code, _, writer = await handshake(worker.port, "/ws/notifications/", headers)
        writer.close()
        await writer.wait_closed()
        return code

    origins = [origin.format(port=worker.port) for origin in MALFORMED_ORIGINS]
    answers = {origin: await status(origin) for origin in origins}
    log = worker.log_since(mark)
    assert "Traceback" not in log, log
    refusals = {403, REFUSED_BY_AUTOBAHN} if server == "daphne" else {403}
    assert {origin: code for origin, code in answers.items() if code not in refusals} == {}
    assert await status(ORIGIN) == 101


async def test_a_malformed_origin_is_refused_by_bare_host_patterns_too(socket_for, alice):
    """The default WS_ALLOWED_ORIGINS match a host on any port: a malformed Origin is refused all the same."""
    accepted = []
    for origin in (origin.format(port=8000) for origin in MALFORMED_ORIGINS):
        socket = await socket_for("/ws/notifications/", alice, origin=origin, connect=False)
        connected, _ = await socket.connect()
        if connected:
            accepted.append(origin)
    assert accepted == []


@pytest.mark.parametrize("server", list(SERVERS))
async def test_a_refused_bearer_token_is_closed_with_4401_and_its_reason(server, servers):
    """A handshake whose bearer token is refused is closed with 4401 `invalid_token`."""
    worker = servers[server]
    headers = {"Authorization": "Bearer not.a.token"}
    with pytest.raises(ConnectionClosed) as closed:
        async with connect(f"{worker.ws}/ws/notifications/", additional_headers=headers) as socket:
            await asyncio.wait_for(socket.recv(), 10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
    if server != "daphne":  # plain daphne drops every close reason (daphne#374; issue 13, item 1)
        assert closed.value.rcvd.reason == "invalid_token"
