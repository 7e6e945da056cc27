"""Fault tests (issue 7): break Redis and workers for real, on loopback, and lose nothing.

Each test owns what it breaks: a private `redis-server` on a spare port (never
the shared one), and worker subprocesses (`python -m realtime.serve`) pointed
at it and at this test's database (helpers in `realtime/tests/faults.py`; the
PostgreSQL case is `test_fault_postgres.py`). Clients keep a record of every id they got
(per connection, to catch duplicates) and reconnect + resume like the browser
client; at the end their ids are compared with the database: no gap, no
duplicate within a connection.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from chat import services as chat_services
from realtime import apikeys
from realtime.tests.faults import (
    Poster,
    PrivateRedis,
    Worker,
    check_answers,
    follow,
    poll,
    running,
    settle,
    stop_following,
    worker_env,
)
from realtime.tests.servers import browser_socket, http_get

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
    return apikeys.create_api_key(name="faults")[1]


async def test_redis_restart_while_posting_loses_nothing(world, alice, tmp_path):
    redis = PrivateRedis()
    await redis.start()
    worker = Worker(worker_env(redis), tmp_path / "worker.log")
    async with running(worker, redis):
        await worker.start()
        followers, tasks = await follow([worker.ws], alice)
        poster = Poster([worker.base], world)
        try:
            for n in range(5):
                await poster.post(n)
            await redis.stop()  # Redis' memory (subscriptions, presence) is gone
            for n in range(5, 10):
                await poster.post(n)  # posting keeps working while Redis is down

            async def noticed():
                return all(1011 in follower.closes for follower in followers)

            # The sockets notice within a few seconds (the hub's heartbeat), not silence.
            await poll(noticed, seconds=10, what="sockets closed 1011 while Redis is down")
            await redis.start()
            for n in range(10, 15):
                await poster.post(n)

            async def ready():
                return (await asyncio.to_thread(http_get, f"{worker.base}/readyz", 3))[0] == 200

            await poll(ready, seconds=30, what="worker ready again")
            await settle(followers, poster, 15)
        finally:
            await stop_following(followers, tasks)
        # The sockets noticed (closed 1011 unavailable), not silence.
        for follower in followers:
            assert 1011 in follower.closes, follower.closes
        check_answers(poster)
        assert sum(1 for k, s, _ in poster.answers if s in (201, 202)) == 32  # every post stored


@pytest.mark.xfail(
    strict=False,
    reason="known issue (docs/reliability.md): a socket that connects while Redis is frozen is "
    "closed 1011 once, but a later reconnect can sit without welcome or close after SIGCONT",
)
async def test_redis_frozen_for_10s_no_hang_and_same_end_state(world, alice, tmp_path):
    redis = PrivateRedis()
    await redis.start()
    worker = Worker(worker_env(redis), tmp_path / "worker.log")
    async with running(worker, redis):
        await worker.start()
        followers, tasks = await follow([worker.ws], alice)
        poster = Poster([worker.base], world)
        try:
            await poster.post(0)
            redis.signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            # /readyz answers 503 quickly even though Redis is frozen (bounded checks).
            started = time.monotonic()
            status, _ = await asyncio.to_thread(http_get, f"{worker.base}/readyz", 20)
            assert status == 503
            assert time.monotonic() - started < 10
            assert (await asyncio.to_thread(http_get, f"{worker.base}/healthz", 5))[0] == 200
            await poster.post(1)  # stored; the push times out and is dropped
            await asyncio.sleep(max(0.0, 10 - (time.monotonic() - frozen_at)))  # the fault's duration
            redis.signal(signal.SIGCONT)

            async def ready():
                return (await asyncio.to_thread(http_get, f"{worker.base}/readyz", 3))[0] == 200

            await poll(ready, seconds=30, what="worker ready after SIGCONT")
            await settle(followers, poster, 2)
        finally:
            await stop_following(followers, tasks)
        for follower in followers:
            assert 1011 in follower.closes, follower.closes
        check_answers(poster)


async def test_sigkill_one_of_two_workers_clients_resume_on_the_other(world, alice, bob, carol, tmp_path):
    redis = PrivateRedis()
    await redis.start()
    env = worker_env(redis, PRESENCE_TTL_SECONDS="3", PRESENCE_HEARTBEAT_SECONDS="0.5")
    a, b = Worker(env, tmp_path / "a.log"), Worker(env, tmp_path / "b.log")
    async with running(a, b, redis):
        await a.start()
        await b.start()
        followers, tasks = await follow([a.ws, b.ws], alice)
        watcher = await browser_socket(f"{b.ws}/ws/chat/lobby/", bob)
        # Carol is only on worker A and does not come back.
        carols = await browser_socket(f"{a.ws}/ws/chat/lobby/", carol)
        poster = Poster([b.base], world)
        try:

            async def carol_online():
                frame = json.loads(await asyncio.wait_for(watcher.recv(), 20))
                return frame["type"] in ("welcome", "presence") and "carol" in frame["online"]

            await poll(carol_online, seconds=20, what="carol online")
            for n in range(5):
                await poster.post(n)
            a.process.kill()  # SIGKILL: no drain, no presence leave
            for n in range(5, 10):
                await poster.post(n)
            await settle(followers, poster, 10)

            # Presence forgets the dead worker's users within 60 s.
            async def carol_forgotten():
                frame = json.loads(await asyncio.wait_for(watcher.recv(), 60))
                return frame["type"] == "presence" and "carol" not in frame["online"]

            await poll(carol_forgotten, seconds=60, what="presence forgets carol")
        finally:
            await stop_following(followers, tasks)
            await watcher.close()
            await carols.close()
        check_answers(poster)


async def test_sigterm_closes_1012_clients_move_and_in_flight_posts_are_answered(world, alice, tmp_path):
    redis = PrivateRedis()
    await redis.start()
    env = worker_env(redis)
    a, b = Worker(env, tmp_path / "a.log"), Worker(env, tmp_path / "b.log")
    async with running(a, b, redis):
        await a.start()
        await b.start()
        followers, tasks = await follow([a.ws, b.ws], alice)
        poster = Poster([a.base, b.base], world)
        try:
            posting = asyncio.gather(*(poster.post(n) for n in range(10)))
            a.process.send_signal(signal.SIGTERM)
            await posting
            assert await asyncio.wait_for(a.process.wait(), 20) == 0
            await settle(followers, poster, 11)  # posts to b only from here (11 is odd)
        finally:
            await stop_following(followers, tasks)
        for follower in followers:
            assert follower.closes and follower.closes[0] == 1012, follower.closes
        check_answers(poster)
