"""The handshake and the close under every server the project runs under (realtime.launcher.SERVERS).

One process per server, started together and shared by the module's tests:
clients that drop right after the 101, malformed Origin headers, a refused
bearer token, oversized frames (1009), clients that close while the server
sends.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chat import services as chat_services
from realtime.launcher import SERVERS, Worker
from testsupport.asgi import ORIGIN
from testsupport.auth import session_cookie
from testsupport.faults import poll
from testsupport.processes import server_env
from testsupport.servers import browser_socket, every_server, handshake, open_sockets

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


@pytest.fixture(scope="module")
def servers(django_db_setup, tmp_path_factory):
    """Every server of SERVERS on the test database, started at once; {name: Worker}."""
    logs = tmp_path_factory.mktemp("servers")
    env = server_env(uuid.uuid4().hex[:10]) | {
        "LOG_LEVEL": "INFO",
        # A scheme pattern first: Channels' check of one raised on a malformed port.
        "WS_ALLOWED_ORIGINS": f"{ORIGIN},127.0.0.1",
        # Far longer than a test: an entry left behind must not expire before the check.
        "PRESENCE_TTL_SECONDS": "600",
    }
    with every_server(env, logs) as started:
        yield started


async def drop_after_101(port: int, path: str, cookie: str) -> None:
    """A browser's handshake, then the TCP connection closed as soon as the 101 is read."""
    status, _, writer = await handshake(
        port, path, {"Origin": ORIGIN, "Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}
    )
    writer.close()
    await writer.wait_closed()
    assert status == 101


async def online_in_lobby(server: Worker, user) -> list[str]:
    """`online` of the welcome a fresh chat socket of `user` gets in the lobby."""
    socket = await browser_socket(f"{server.ws}/ws/chat/lobby/", user)
    try:
        welcome = json.loads(await asyncio.wait_for(socket.recv(), 10))
    finally:
        await socket.close()
    assert welcome["type"] == "welcome", welcome
    return welcome["online"]


async def assert_nothing_left(worker: Worker, *, before: dict, mark: int, offline=None, watcher=None):
    """Gauge back to `before`, user `offline` not in the lobby (as `watcher` sees it), no traceback logged."""

    async def gauge_back():
        now = await asyncio.to_thread(open_sockets, worker.url)
        return all(now.get(endpoint, 0) == before.get(endpoint, 0) for endpoint in ("chat", "notifications"))

    await poll(gauge_back, seconds=20, what=f"open-socket gauge back to {before}")
    if offline is not None:

        async def gone():
            return offline not in await online_in_lobby(worker, watcher)

        await poll(gone, seconds=20, what=f"{offline} no longer online")
    log = worker.log_since(mark)
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log


@pytest.mark.parametrize("server", list(SERVERS))
async def test_clients_that_drop_right_after_the_101_leave_nothing_behind(server, servers, make_user, bob):
    """60 drops: the open-socket gauge returns to its value before, the user is not online, no traceback."""
    worker = servers[server]
    dropper = await database_sync_to_async(make_user)("dropper")
    await database_sync_to_async(chat_services.create_room)(slug="lobby", title="Lobby")
    cookie = await database_sync_to_async(session_cookie)(dropper)
    mark = worker.log_size()
    before = await asyncio.to_thread(open_sockets, worker.url)

    paths = ["/ws/chat/lobby/", "/ws/notifications/"]
    gate = asyncio.Semaphore(10)

    async def drop(n: int) -> None:
        async with gate:
            await drop_after_101(worker.port, paths[n % len(paths)], cookie)

    await asyncio.gather(*(drop(n) for n in range(60)))
    await assert_nothing_left(worker, before=before, mark=mark, offline="dropper", watcher=bob)


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
    assert {origin: code for origin, code in answers.items() if code != 403} == {}
    assert await status(ORIGIN) == 101


UNKNOWN_SOCKET_PATHS = [
    "/ws/nope/",
    "/ws/",
    "/",
    "/ws/chat",
    "/ws/notifications/extra/",
    "/static/js/bell.js",
]


@pytest.mark.parametrize("server", list(SERVERS))
async def test_a_handshake_to_an_unknown_path_is_refused_with_403_and_no_traceback(server, servers, alice):
    """`/ws/nope/` and other unrouted paths: 403 at the handshake, with a session or without; one log line."""
    worker = servers[server]
    cookie = await database_sync_to_async(session_cookie)(alice)
    mark = worker.log_size()
    answers = {}
    for path in UNKNOWN_SOCKET_PATHS:
        for headers in ({}, {"Origin": ORIGIN, "Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}):
            code, _, writer = await handshake(worker.port, path, headers)
            writer.close()
            await writer.wait_closed()
            answers[path, bool(headers)] = code
    assert {key: code for key, code in answers.items() if code != 403} == {}

    async def all_logged():
        return worker.log_since(mark).count("event=socket_refused reason=no_route") == len(answers)

    await poll(all_logged, seconds=10, what="a socket_refused line for each refused handshake")
    log = worker.log_since(mark)
    assert "Traceback" not in log, log
    assert "No route found" not in log, log
    assert " ERROR " not in log, log


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
    assert closed.value.rcvd.reason == "invalid_token"


async def oversized_frame(worker: Worker, cookie: str) -> tuple[int | None, str | None]:
    """A chat socket that sends one 70 KB frame after its welcome; the close it gets."""
    headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}
    async with connect(
        f"{worker.ws}/ws/chat/lobby/", origin=ORIGIN, additional_headers=headers, open_timeout=10
    ) as socket:
        assert json.loads(await asyncio.wait_for(socket.recv(), 10))["type"] == "welcome"
        await socket.send(json.dumps({"type": "message", "body": "x" * 70_000}))
        try:
            while True:
                await asyncio.wait_for(socket.recv(), 10)
        except ConnectionClosed as closed:
            return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, None)


@pytest.mark.parametrize("server", list(SERVERS))
async def test_oversized_frames_are_closed_1009_and_leave_nothing_behind(server, servers, make_user, bob):
    """100 sockets each send a 70 KB frame: 1009 `frame_too_large`, gauge back, user offline, no traceback."""
    worker = servers[server]
    sender = await database_sync_to_async(make_user)("oversized")
    await database_sync_to_async(chat_services.create_room)(slug="lobby", title="Lobby")
    cookie = await database_sync_to_async(session_cookie)(sender)
    mark = worker.log_size()
    before = await asyncio.to_thread(open_sockets, worker.url)
    gate = asyncio.Semaphore(10)

    async def one() -> tuple[int | None, str | None]:
        async with gate:
            return await oversized_frame(worker, cookie)

    closes = await asyncio.gather(*(one() for _ in range(100)))
    assert set(closes) == {(1009, "frame_too_large")}
    await assert_nothing_left(worker, before=before, mark=mark, offline="oversized", watcher=bob)


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (payload under 126 bytes)."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[n % 4] for n, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


async def ping_then_close(worker: Worker, cookie: str) -> None:
    """A `ping` and a close frame in one write: the server answers into a socket that is closing."""
    status, reader, writer = await handshake(
        worker.port,
        "/ws/notifications/",
        {"Origin": ORIGIN, "Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"},
    )
    assert status == 101
    assert await asyncio.wait_for(reader.read(65536), 10)  # the welcome: the consumer waits for frames
    ping = client_frame(0x1, json.dumps({"type": "ping"}).encode())
    writer.write(ping + client_frame(0x8, (1000).to_bytes(2, "big")))
    await writer.drain()
    while await asyncio.wait_for(reader.read(65536), 10):
        pass  # until the server closes the connection
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("server", list(SERVERS))
async def test_clients_that_close_while_the_server_sends_cause_no_traceback(server, servers, make_user):
    """40 clients send `ping` and a close at once: every socket cleaned up, no traceback logged."""
    worker = servers[server]
    closer = await database_sync_to_async(make_user)("closer")
    cookie = await database_sync_to_async(session_cookie)(closer)
    mark = worker.log_size()
    before = await asyncio.to_thread(open_sockets, worker.url)
    gate = asyncio.Semaphore(10)

    async def one() -> None:
        async with gate:
            await ping_then_close(worker, cookie)

    await asyncio.gather(*(one() for _ in range(40)))
    await assert_nothing_left(worker, before=before, mark=mark)
