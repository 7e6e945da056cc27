"""Two deployments on one Redis server never see each other's pushes, chat, presence or disconnects.

Contract v2, "Deployments are isolated"; issue 13, item 5. Two deployments as
operators make them: each its own database (migrated and seeded the same way,
so alice, bob, carol and the lobby have the same ids in both) and its own Redis
db number on one private Redis, default settings otherwise: no prefix and no
namespace set by hand. Redis pub/sub ignores db numbers, so before the
namespace deployment 2's `notify`, chat, presence and disconnect reached
deployment 1's sockets. Deployment 1 runs under plain daphne, deployment 2
under uvicorn: the namespace comes from the settings, whatever serves them.

No sleeps: deployment 2's pushes are published to the Redis server before
deployment 1's own ones, and Redis delivers to a subscriber in the order it
received, so a crossing push would reach deployment 1's socket first.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass

import pytest
from websockets.exceptions import ConnectionClosed

from realtime.launcher import Worker
from testsupport.deployments import demo_databases, deployment_env, login, manage, query, serving
from testsupport.faults import PrivateRedis, running
from testsupport.servers import publish, token_socket

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(180)]

DISCONNECT_ALICE = (
    "from django.contrib.auth import get_user_model\n"
    "from realtime.protocol import CloseReason\n"
    "from realtime.authentication.services import disconnect_user\n"
    "disconnect_user(user=get_user_model().objects.get(username='alice'), reason=CloseReason.DISCONNECTED)\n"
)


async def next_frame(ws, *types: str, wait: float = 15.0) -> dict:
    """The next frame of one of `types`; `presence` frames passed over on the way are kept on `ws`."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), wait))
        if frame["type"] in types:
            return frame
        assert frame["type"] == "presence", frame
        ws.presence_seen = [*getattr(ws, "presence_seen", []), frame]


def namespace_logged(server: Worker) -> str:
    (namespace,) = set(re.findall(r"event=redis_namespace namespace=(\S+)", server.log()))
    return namespace


@dataclass
class Deployment:
    server: Worker
    env: dict[str, str]
    database_url: str
    key: str  # an API key for /api/publish/*

    async def socket(self, path: str, username: str):
        ws = await token_socket(f"{self.server.ws}{path}", await login(self.server.url, username))
        await next_frame(ws, "welcome")
        return ws

    async def notify(self, username: str, title: str, body: str) -> None:
        """`manage.py notify`, as an operator types it on this deployment."""
        out = await manage(self.env, "notify", "--user", username, "--title", title, "--body", body)
        assert out.split() == ["1"]

    async def post(self, body: str) -> None:
        status, answer = await asyncio.to_thread(
            publish, self.server.url, self.key, "/api/publish/chat/lobby/", {"body": body}
        )
        assert status == 201, answer


@pytest.fixture
async def deployments(tmp_path):
    """Two deployments on one private Redis (db 1 and db 2), each with its own database and server."""
    redis = PrivateRedis()
    await redis.start()
    async with running(redis), demo_databases(2) as databases:
        envs, keys = [], []
        for n, database_url in enumerate(databases, start=1):
            envs.append(
                deployment_env(database_url=database_url, REDIS_URL=f"redis://127.0.0.1:{redis.port}/{n}")
            )
            keys.append((await manage(envs[-1], "createapikey", f"iso-{n}")).split()[-1])
        launchers = [
            ("daphne", envs[0], tmp_path / "first.log"),
            ("uvicorn-websockets", envs[1], tmp_path / "second.log"),
        ]
        async with serving(*launchers) as servers:
            yield [Deployment(*made) for made in zip(servers, envs, databases, keys, strict=True)]


async def test_a_second_deployment_on_the_same_redis_reaches_none_of_the_first_ones_sockets(deployments):
    """Deployment 2's notify, chat, presence and disconnect stay in deployment 2; deployment 1's arrive."""
    first, second = deployments
    assert namespace_logged(first.server) != namespace_logged(second.server)
    inbox = await first.socket("/ws/notifications/", "alice")
    lobby = await first.socket("/ws/chat/lobby/", "bob")
    other_inbox = await second.socket("/ws/notifications/", "alice")
    other_lobby = await second.socket("/ws/chat/lobby/", "carol")  # joining is a presence change
    try:
        # Deployment 2 notifies alice, posts in its lobby and disconnects alice...
        await second.notify("alice", "2: secret", "b2")
        await second.post("2: lunch")
        await manage(second.env, "shell", "-c", DISCONNECT_ALICE)
        # ...which its own sockets see.
        assert (await next_frame(other_inbox, "notification"))["notification"]["title"] == "2: secret"
        assert (await next_frame(other_lobby, "message"))["message"]["body"] == "2: lunch"
        with pytest.raises(ConnectionClosed) as closed:
            await next_frame(other_inbox, "notification")
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "disconnected")

        # Deployment 1 does the same after it; its sockets get exactly its own, first.
        await first.notify("alice", "1: hello", "b1")
        await first.post("1: lunch")
        note = (await next_frame(inbox, "notification"))["notification"]
        (own_id,) = [
            i for (i,) in await query(first.database_url, "SELECT id FROM notifications_notification")
        ]
        assert (note["title"], note["body"], note["id"]) == ("1: hello", "b1", own_id)
        assert (await next_frame(lobby, "message"))["message"]["body"] == "1: lunch"
        assert not [frame for frame in getattr(lobby, "presence_seen", []) if "carol" in frame["joined"]]

        # Alice's socket is still open (the other deployment's disconnect did not close it),
        # and a new one resuming from the start gets exactly her own notification.
        await inbox.send(json.dumps({"type": "ping"}))
        assert await next_frame(inbox, "pong")
        again = await first.socket("/ws/notifications/", "alice")
        await again.send(json.dumps({"type": "resume", "after": 0}))
        replayed = (await next_frame(again, "notification"))["notification"]
        assert (replayed["id"], replayed["title"]) == (own_id, "1: hello")
        assert (await next_frame(again, "replay_done"))["last_id"] == own_id
        await again.close()
    finally:
        for ws in (inbox, lobby, other_inbox, other_lobby):
            await ws.close()
