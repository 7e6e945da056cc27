"""WS_MAX_SOCKETS_PER_USER (contract v2, issue 14 item 3): a user's sockets, counted across
endpoints and worker processes.

The cap is 3 here. In one process through the ASGI application, then under
every server of SERVERS with two worker processes of it, then a worker killed
with SIGKILL: its slots come back within WS_SOCKETS_TTL_SECONDS while the live
worker's sockets, refreshed by its heartbeat, stay counted.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from django.conf import settings
from redis.asyncio import Redis
from websockets.exceptions import ConnectionClosed

from chat.models import Room
from realtime.launcher import SERVERS
from testsupport.asgi import closed_with, receive_type
from testsupport.faults import fault_worker, poll
from testsupport.processes import server_env
from testsupport.servers import browser_socket

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

CAP = 3


@pytest.fixture
def room(db):
    return Room.objects.create(slug=f"cap-{uuid.uuid4().hex[:6]}", title="Cap")


async def test_fourth_socket_across_endpoints_is_closed_with_4429(socket_for, alice, room, settings):
    """With a cap of 3, the 4th socket (notifications and chat together) is closed 4429 too_many_sockets."""
    settings.WS_MAX_SOCKETS_PER_USER = CAP
    settings.WS_SOCKETS_KEY_PREFIX = f"{settings.WS_SOCKETS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    first = await socket_for("/ws/notifications/", alice)
    await receive_type(first, "welcome")
    second = await socket_for(f"/ws/chat/{room.slug}/", alice)
    await receive_type(second, "welcome")
    third = await socket_for("/ws/notifications/", alice)
    await receive_type(third, "welcome")
    fourth = await socket_for(f"/ws/chat/{room.slug}/", alice)
    assert await closed_with(fourth) == (4429, "too_many_sockets")
    await first.disconnect()

    async def welcomed():
        again = await socket_for("/ws/notifications/", alice)
        frame = await again.receive_output(10)
        if frame["type"] == "websocket.send":
            return json.loads(frame["text"])["type"] == "welcome"
        assert (frame.get("code"), frame.get("reason")) == (4429, "too_many_sockets"), frame
        return False

    assert await poll(welcomed, seconds=10, what="a freed slot")


async def test_sockets_opened_at_once_past_the_cap_are_each_counted(socket_for, alice, settings):
    """Five sockets of one user opened together with a cap of 3: three welcomed, two closed 4429."""
    settings.WS_MAX_SOCKETS_PER_USER = CAP
    settings.WS_SOCKETS_KEY_PREFIX = f"{settings.WS_SOCKETS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    sockets = await asyncio.gather(*(socket_for("/ws/notifications/", alice) for _ in range(5)))

    async def outcome(socket) -> str:
        frame = await socket.receive_output(10)
        if frame["type"] == "websocket.send":
            return json.loads(frame["text"])["type"]
        return f"{frame.get('code')} {frame.get('reason')}"

    outcomes = await asyncio.gather(*(outcome(s) for s in sockets))
    assert sorted(outcomes) == ["4429 too_many_sockets"] * 2 + ["welcome"] * 3


async def closed_code(ws) -> tuple[int | None, str]:
    """The close code and reason a socket got, skipping frames (bounded by recv's own wait)."""
    try:
        while True:
            await ws.recv()
    except ConnectionClosed as exc:
        return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")


async def opened(url: str, user) -> object:
    ws = await browser_socket(url, user)
    frame = json.loads(await ws.recv())
    assert frame["type"] == "welcome", frame
    return ws


def cap_env(tag: str, **extra: str) -> dict[str, str]:
    return server_env(tag) | {
        "WS_MAX_SOCKETS_PER_USER": str(CAP),
        "WS_SOCKETS_KEY_PREFIX": f"test-sockets-{tag}",
        **extra,
    }


@pytest.mark.parametrize("name", list(SERVERS))
async def test_cap_counts_across_two_worker_processes(alice, room, tmp_path, name):
    """Two workers of each server: the 4th socket gets 4429 too_many_sockets; a closed one frees its slot."""
    env = cap_env(uuid.uuid4().hex[:10])
    workers = [fault_worker(env, tmp_path / f"{name}-{n}.log", server=name) for n in range(2)]
    sockets = []
    try:
        for worker in workers:
            await worker.astart()
        a, b = workers
        sockets.append(await opened(f"{a.ws}/ws/notifications/", alice))
        sockets.append(await opened(f"{a.ws}/ws/chat/{room.slug}/", alice))
        sockets.append(await opened(f"{b.ws}/ws/notifications/", alice))
        refused = await browser_socket(f"{b.ws}/ws/chat/{room.slug}/", alice)
        assert await closed_code(refused) == (4429, "too_many_sockets")
        await sockets.pop(0).close()

        async def welcomed():
            ws = await browser_socket(f"{b.ws}/ws/chat/{room.slug}/", alice)
            try:
                frame = json.loads(await ws.recv())
            except ConnectionClosed as exc:
                assert (exc.rcvd.code, exc.rcvd.reason) == (4429, "too_many_sockets"), exc
                return None
            assert frame["type"] == "welcome", frame
            sockets.append(ws)
            return ws

        await poll(welcomed, seconds=10, what="a new socket welcomed after one closed")
        for worker in workers:
            assert "Traceback" not in worker.log(), worker.log()
    finally:
        for ws in sockets:
            await ws.close()
        for worker in workers:
            await worker.astop()


async def test_killed_workers_slots_come_back_within_the_ttl(alice, room, tmp_path):
    """SIGKILL a worker holding the cap: its slots come back within the TTL; live ones stay counted."""
    tag = uuid.uuid4().hex[:10]
    env = cap_env(tag, WS_SOCKETS_TTL_SECONDS="3", WS_SOCKETS_HEARTBEAT_SECONDS="0.5")
    workers = [fault_worker(env, tmp_path / f"worker-{n}.log") for n in range(2)]
    redis = Redis.from_url(settings.REDIS_URL)
    key = f"test-sockets-{tag}:{settings.REDIS_NAMESPACE}:{alice.pk}"
    sockets = []
    try:
        for worker in workers:
            await worker.astart()
        a, b = workers
        for path in ("/ws/notifications/", f"/ws/chat/{room.slug}/", "/ws/notifications/"):
            sockets.append(await opened(f"{a.ws}{path}", alice))
        assert await closed_code(await browser_socket(f"{b.ws}/ws/notifications/", alice)) == (
            4429,
            "too_many_sockets",
        )
        await a.astop()  # SIGKILL: no close, no release

        async def welcomed():
            try:
                ws = await opened(f"{b.ws}/ws/notifications/", alice)
            except ConnectionClosed as exc:
                assert (exc.rcvd.code, exc.rcvd.reason) == (4429, "too_many_sockets"), exc
                return None
            sockets.append(ws)
            return ws

        for _ in range(CAP):
            await poll(welcomed, seconds=3 + 5, what="the killed worker's slots back")

        # The live worker's entries outlive their first expiry (its heartbeat refreshes
        # them), so the cap still holds after it: polled on Redis' own clock.
        first_expiry = max(score for _, score in await redis.zrange(key, 0, -1, withscores=True))

        async def past_first_expiry():
            seconds, micros = await redis.time()
            return seconds + micros / 1e6 > first_expiry + 0.5

        await poll(past_first_expiry, seconds=10, what="the first expiry passed")
        scores = [score for _, score in await redis.zrange(key, 0, -1, withscores=True)]
        assert len(scores) == CAP and min(scores) > first_expiry, (scores, first_expiry)
        assert await closed_code(await browser_socket(f"{b.ws}/ws/chat/{room.slug}/", alice)) == (
            4429,
            "too_many_sockets",
        )
        assert "Traceback" not in b.log(), b.log()
    finally:
        for ws in sockets:
            await ws.close()
        for worker in workers:
            await worker.astop()
        await redis.delete(key)
        await redis.aclose()
