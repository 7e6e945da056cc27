"""Redis with Sentinel: the layer, presence and the rate limit all follow the master (issue 13, item 8).

A master, a replica and a sentinel on private ports (testsupport/deployments.py,
`PrivateSentinel`), two workers given only `REDIS_SENTINELS` (no `REDIS_URL`), one
under `python -m realtime.serve` and one under uvicorn, with the fault tests'
settings (testsupport/faults.py) and a small chat burst. Presence and the rate
limit used to read `REDIS_URL` only, so with Sentinel each worker silently kept its
own. Here they are shared between the workers before and after the master is
killed, and pushes go on after the failover: the recording clients end with every
row of the database, no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from websockets.exceptions import ConnectionClosed

from chat import services as chat_services
from realtime.authentication import apikeys
from realtime.launcher import Worker, http_get
from testsupport.auth import DEMO_PASSWORD
from testsupport.deployments import PrivateSentinel, get_json, serving
from testsupport.faults import FAULT_MARKS, poll, worker_env
from testsupport.recording import Poster, check_answers, follow, settle, stop_following
from testsupport.servers import browser_socket, next_frame, post_json, post_on_socket

pytestmark = [*FAULT_MARKS, pytest.mark.timeout(180)]

BURST = 3  # chat messages a user may post at once per room; they refill after 1000 s
SPARES = [f"user{n}" for n in range(8)]


@pytest.fixture
def world(db, alice, bob, carol, make_user):
    """The lobby, an API key, and users to spare: (key, users)."""
    chat_services.create_room(slug="lobby", title="Lobby")
    return apikeys.create_api_key(name="sentinel")[1], [make_user(name) for name in ("dave", *SPARES)]


async def lobby_socket(server: Worker, user, opened: list):
    ws = await browser_socket(f"{server.ws}/ws/chat/lobby/", user)
    opened.append(ws)
    await next_frame(ws, lambda f: f["type"] == "welcome")
    return ws


async def presence_is_shared(a: Worker, b: Worker, member, user, opened: list) -> None:
    """A user online through worker B is in the online list a member gets from worker A."""
    online = await lobby_socket(b, user, opened)
    watcher = await browser_socket(f"{a.ws}/ws/chat/lobby/", member)
    opened.append(watcher)
    welcome = await next_frame(watcher, lambda f: f["type"] == "welcome")
    assert user.username in welcome["online"], welcome
    assert welcome["online_count"] == len(welcome["online"]) >= 2, welcome
    # The online list over HTTP (presence's blocking client) says the same.
    status, token = await asyncio.to_thread(
        post_json, f"{a.url}/api/token/", {"username": member.username, "password": DEMO_PASSWORD}
    )
    assert status == 200, token
    status, page = await asyncio.to_thread(
        get_json, f"{a.url}/api/chat/rooms/lobby/online/", token=token["access"]
    )
    assert status == 200, page
    if user.username not in page["results"]:
        # Only if B's live-feed check closed the user's socket meanwhile (see `shared`).
        await asyncio.wait_for(online.wait_closed(), 10)
        while True:
            await online.recv()  # frames it had buffered, then ConnectionClosed with the close code
    assert user.username in page["results"], page


async def rate_limit_is_shared(a: Worker, b: Worker, user, opened: list) -> None:
    """A user's chat burst is one bucket across the workers: posts past it are refused on either."""
    sockets = [await lobby_socket(a, user, opened), await lobby_socket(b, user, opened)]
    answers = [
        (await post_on_socket(sockets[n % 2], f"{user.username} {n}"))["type"] for n in range(BURST + 1)
    ]
    assert answers == ["message"] * BURST + ["error"], answers
    refused = await post_on_socket(sockets[0], f"{user.username} again")
    assert (refused["type"], refused["code"]) == ("error", "rate_limited"), refused


async def shared(check, users: list, opened: list) -> None:
    """`check(user, opened)`, with the next user if a socket under it is closed 1011.

    Right after a failover a worker's heartbeat that began during it can still
    close its sockets once (clients reconnect); that is not what is checked here.
    """
    for user in users:
        try:
            return await check(user, opened)
        except ConnectionClosed as exc:
            if exc.rcvd is None or exc.rcvd.code != 1011:
                raise
        finally:
            for ws in opened:
                await ws.close()
            opened.clear()
    raise AssertionError("every attempt was cut by a 1011 close")


async def test_presence_rate_limit_and_pushes_follow_a_sentinel_failover(world, alice, bob, carol, tmp_path):
    """Shared presence and rate limit on two workers, the master killed, pushes resume on the new one."""
    key, (dave, *spares) = world
    async with PrivateSentinel(tmp_path) as sentinel:
        env = worker_env(
            sentinel.master,
            REDIS_URL="",  # only the sentinels: what every Redis client must follow
            REDIS_SENTINELS=sentinel.address,
            REDIS_SENTINEL_MASTER=sentinel.service,
            CHAT_RATE_BURST=str(BURST),
            CHAT_RATE_PER_SECOND="0.001",
        )
        launchers = [
            ("realtime.serve", env, tmp_path / "a.log"),
            ("uvicorn-websockets", env, tmp_path / "b.log"),
        ]
        opened: list = []
        async with serving(*launchers) as (a, b):
            followers, tasks = await follow([a.ws, b.ws], alice)
            poster = Poster([a.url, b.url], key)
            try:
                await shared(partial(presence_is_shared, a, b, bob), [carol, dave], opened)
                await shared(partial(rate_limit_is_shared, a, b), spares[:2], opened)
                for n in range(4):
                    await poster.post(n)

                await sentinel.kill_master()
                for n in range(4, 8):
                    await poster.post(n)  # during the failover: stored, the push may be lost

                async def failed_over() -> bool:
                    return await sentinel.master_port() == sentinel.replica.port

                await poll(failed_over, seconds=60, what="the sentinel promotes the replica")

                async def both_ready() -> bool:
                    answers = [await asyncio.to_thread(http_get, f"{s.url}/readyz", 3) for s in (a, b)]
                    return all(status == 200 for status, _ in answers)

                await poll(both_ready, seconds=60, what="both workers ready on the new master")
                await settle(followers, poster, 8)  # every row reached the clients: no gap, no duplicate

                # Still one presence and one rate limit for both workers, now on the new master.
                await shared(partial(presence_is_shared, b, a, carol), spares[2:5], opened)
                await shared(partial(rate_limit_is_shared, b, a), spares[5:], opened)
            finally:
                await stop_following(followers, tasks)
                for ws in opened:
                    await ws.close()
        check_answers(poster)
        for server in (a, b):
            assert "Traceback" not in server.log(), server.log()
