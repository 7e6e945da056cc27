"""The handshake under every server the project runs under (realtime.tests.servers.SERVERS).

One process per server, started together and shared by the module's tests:
clients that drop right after the 101.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from chat import services as chat_services
from conftest import ORIGIN, server_env, session_cookie
from realtime.tests.faults import poll
from realtime.tests.servers import SERVERS, ServerProcess, browser_socket, handshake, open_sockets

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def servers(django_db_setup, tmp_path_factory):
    """Every server of SERVERS on the test database, started at once; {name: ServerProcess}."""
    logs = tmp_path_factory.mktemp("servers")
    env = server_env(uuid.uuid4().hex[:10]) | {
        "LOG_LEVEL": "INFO",
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
