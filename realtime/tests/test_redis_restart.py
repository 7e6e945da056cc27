"""The first command on each pooled Redis connection after a Redis restart (issue 13, item 11).

redis-py 8.1 hands out pooled connections that the restarted Redis closed
without noticing, so the first command on each failed: the first push was
dropped (an open socket saw nothing live until some later push showed it the
gap), the first chat post was refused `unavailable` (the rate limiter's
connection) and the first chat socket was closed 1011 (presence's). Every
connection now retries once on a new one (realtime/redis_client.py).

A worker on a private Redis with open sockets; Redis is restarted (its memory
is gone); once the worker has subscribed again (it does by itself), each of
the three is the first command of its pool. The hub's heartbeat and the
presence heartbeat are set far apart so that nothing else uses those
connections first, as happens whenever a push follows a restart sooner than
the next heartbeat.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis

from chat import services as chat_services
from realtime import apikeys
from realtime.tests.faults import PrivateRedis, Worker, poll, publish, running, worker_env
from realtime.tests.servers import browser_socket
from realtime.tests.test_fault_postgres import next_frame, post_on_socket

pytestmark = [
    pytest.mark.faults,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]


@pytest.fixture
def world(db, alice, bob, carol):
    chat_services.create_room(slug="lobby", title="Lobby")
    return apikeys.create_api_key(name="restart")[1]


async def restart_and_wait_for_subscriptions(redis: PrivateRedis, prefix: str) -> None:
    """Stop and start Redis, then wait until the worker's pub/sub channels are subscribed again."""

    async def channels() -> set[bytes]:
        client = Redis.from_url(redis.url)  # a new client each time: it outlives no restart
        try:
            return set(await client.pubsub_channels(f"{prefix}*"))
        finally:
            await client.aclose()

    before = await channels()
    assert before
    await redis.stop()
    await redis.start()

    async def subscribed_again() -> bool:
        return await channels() >= before

    await poll(subscribed_again, seconds=20, what="the worker subscribed again")


async def test_after_a_redis_restart_the_first_push_post_and_join_all_go_through(world, alice, bob, tmp_path):
    """After each restart: a notify reaches the open socket live, a post is stored, a socket is welcomed."""
    redis = PrivateRedis()
    await redis.start()
    env = worker_env(
        redis, HUB_HEARTBEAT_SECONDS="3600", PRESENCE_HEARTBEAT_SECONDS="600", PRESENCE_TTL_SECONDS="1200"
    )
    worker = Worker(env, tmp_path / "worker.log")
    async with running(worker, redis):
        await worker.start()
        inbox = await browser_socket(f"{worker.ws}/ws/notifications/", alice)
        room = await browser_socket(f"{worker.ws}/ws/chat/lobby/", bob)
        sockets = [inbox, room]
        try:
            for ws in (inbox, room):
                await next_frame(ws, lambda f: f["type"] == "welcome")

            # 1. The first push (the channel layer's connection): live on the open socket.
            await restart_and_wait_for_subscriptions(redis, env["CHANNEL_LAYER_PREFIX"])
            status, _ = await asyncio.to_thread(
                publish,
                worker.base,
                world,
                "/api/publish/notifications/",
                {"users": ["alice"], "title": "back"},
            )
            assert status == 202
            frame = await next_frame(inbox, lambda f: f["type"] in ("notification", "error"))
            assert frame["type"] == "notification" and frame["notification"]["title"] == "back", frame

            # 2. The first chat post (the rate limiter's connection): stored and pushed back.
            await restart_and_wait_for_subscriptions(redis, env["CHANNEL_LAYER_PREFIX"])
            answer = await post_on_socket(room, "after the restart")
            assert answer["type"] == "message", answer

            # 3. The first new chat socket (presence's connection): welcomed, not closed 1011.
            await restart_and_wait_for_subscriptions(redis, env["CHANNEL_LAYER_PREFIX"])
            newcomer = await browser_socket(f"{worker.ws}/ws/chat/lobby/", alice)
            sockets.append(newcomer)
            welcome = json.loads(await asyncio.wait_for(newcomer.recv(), 20))
            assert welcome["type"] == "welcome" and "alice" in welcome["online"], welcome
        finally:
            for ws in sockets:
                await ws.close()
        assert "Traceback" not in worker.log()
