"""Fault test (issue 7): PostgreSQL unavailable under a running worker, then back.

The worker (`python -m realtime.serve`) runs on a PostgreSQL cluster of this
test's own (`PrivatePostgres`: `initdb` in a temporary directory, a spare
port) and a private Redis; the shared PostgreSQL and Redis are never touched.
Its data (users, the lobby, an API key) is made the way an operator
would: `migrate`, `seed_demo` and `createapikey` against the private
DATABASE_URL; clients log in through `POST /api/token/`. The worker keeps the
settings' default `DATABASE_CONN_MAX_AGE`, as in production.

While the cluster is stopped (`pg_ctl -m fast`): a chat post on an open socket
gets `error` `unavailable`, the publish API answers 503 `unavailable`,
`/readyz` 503 and `/healthz` 200, and a new socket is closed 1011
`unavailable`, never a traceback. Once it is started again the same worker
process serves everything, and the recording clients end with exactly the
database's ids. The database holds exactly what was acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass

import pytest
from django.conf import settings
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime.launcher import Worker, http_get
from testsupport.asgi import ORIGIN
from testsupport.deployments import login
from testsupport.faults import PrivatePostgres, PrivateRedis, fault_worker, poll, running, worker_env
from testsupport.processes import run_manage
from testsupport.recording import Poster, follow, settle, stop_following
from testsupport.servers import next_frame, post_on_socket, token_socket

pytestmark = [pytest.mark.faults, pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(120)]

UNAVAILABLE = {"error": "unavailable", "detail": "service temporarily unavailable, retry"}


async def close_of(open_socket) -> tuple[int, str]:
    """(code, reason) the server closes a new socket with; it must not get as far as `welcome`."""
    ws = await open_socket()
    try:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    except ConnectionClosed as exc:
        return exc.rcvd.code, exc.rcvd.reason
    finally:
        await ws.close()
    raise AssertionError(f"a socket opened while the database is down got {frame}")


@dataclass
class Stack:
    pg: PrivatePostgres
    worker: Worker
    key: str  # an API key for /api/publish/*


@pytest.fixture
async def stack(tmp_path):
    """A worker on a private Redis and a private PostgreSQL cluster, with the demo data in it."""
    redis = PrivateRedis()
    async with running(redis), PrivatePostgres() as pg:
        await redis.start()
        env = worker_env(redis, DATABASE_URL=pg.url)
        del env["DATABASE_CONN_MAX_AGE"]  # the production default: socket handlers keep a connection
        await run_manage("migrate", "--noinput", env=env)
        await run_manage("seed_demo", env=env)
        key = (await run_manage("createapikey", "pg-fault", env=env)).split()[-1]
        worker = fault_worker(env, tmp_path / "worker.log")
        async with running(worker):
            await worker.astart()
            yield Stack(pg, worker, key)


async def lobby_and_inbox_ids(pg: PrivatePostgres) -> tuple[set[int], set[int]]:
    """What the followers (alice, in the lobby and her inbox) should hold, from the private database."""
    messages = await pg.query(
        "SELECT m.id FROM chat_message m JOIN chat_room r ON r.id = m.room_id WHERE r.slug = 'lobby'"
    )
    notes = await pg.query(
        "SELECT n.id FROM notifications_notification n"
        " JOIN auth_user u ON u.id = n.recipient_id WHERE u.username = 'alice'"
    )
    return {i for (i,) in messages}, {i for (i,) in notes}


async def test_postgres_down_is_refused_cleanly_and_the_same_worker_recovers(stack):
    pg, worker = stack.pg, stack.worker
    pid = worker.pid
    alice, bob = await login(worker.url, "alice"), await login(worker.url, "bob")
    followers, tasks = await follow([worker.ws], None, token=alice)
    poster = Poster([worker.url], stack.key)
    author = await token_socket(f"{worker.ws}/ws/chat/lobby/", bob)
    try:
        await next_frame(author, lambda f: f["type"] == "welcome")
        # Up: both write paths store and acknowledge.
        for n in range(3):
            await poster.post(n)
        assert (await post_on_socket(author, "before"))["type"] == "message"
        assert [status for _, status, _ in poster.answers] == [201, 202] * 3

        await pg.stop()

        # Down: every write is refused with the contract's code, and nothing else.
        refused = await post_on_socket(author, "during")
        assert refused == {
            "type": "error",
            "code": "unavailable",
            "detail": UNAVAILABLE["detail"],
            "ref": "during",
        }
        for n in range(3, 6):
            await poster.post(n)
        assert poster.answers[6:] == [(kind, 503, UNAVAILABLE) for kind in ("chat", "notification") * 3]
        status, text = await asyncio.to_thread(http_get, f"{worker.url}/readyz", 10)
        assert (status, json.loads(text)) == (
            503,
            {"status": "unavailable", "database": "unavailable", "channel_layer": "ok"},
        )
        assert (await asyncio.to_thread(http_get, f"{worker.url}/healthz", 10))[0] == 200
        # New sockets, by bearer token (scripts) or by session cookie (browsers: the session
        # is in the database too), are closed 1011 `unavailable`, not refused with a bare 500.
        for path in ("/ws/chat/lobby/", "/ws/notifications/"):
            assert await close_of(lambda p=path: token_socket(f"{worker.ws}{p}", alice)) == (
                1011,
                "unavailable",
            )
        cookie = f"{settings.SESSION_COOKIE_NAME}={uuid.uuid4().hex}"
        browser = lambda: connect(  # noqa: E731
            f"{worker.ws}/ws/notifications/", origin=ORIGIN, additional_headers={"Cookie": cookie}
        )
        assert await close_of(browser) == (1011, "unavailable")

        await pg.start()

        # Back, in the same worker process: readiness, both write paths, new sockets.
        async def ready():
            return (await asyncio.to_thread(http_get, f"{worker.url}/readyz", 10))[0] == 200

        await poll(ready, seconds=30, what="worker ready once PostgreSQL is back")
        assert (await post_on_socket(author, "after"))["type"] == "message"
        fresh = await token_socket(f"{worker.ws}/ws/notifications/", alice)
        assert (await next_frame(fresh, lambda f: True))["type"] == "welcome"
        await fresh.close()

        # A restart while nothing uses the database: the socket handlers' kept connection
        # is dead, and the very next post must not be the one that finds out.
        await pg.stop()
        await pg.start()
        assert (await post_on_socket(author, "after restart"))["type"] == "message"

        await settle(followers, poster, 6, rows=lambda: lobby_and_inbox_ids(pg))  # no gap, no duplicate
        assert [status for _, status, _ in poster.answers[6:]] == [503] * 6 + [201, 202]
    finally:
        await stop_following(followers, tasks)
        await author.close()
    assert worker.running and worker.pid == pid, "the worker was restarted"

    # Nothing half-written: the database holds exactly what was acknowledged.
    bodies = {body for (body,) in await pg.query("SELECT body FROM chat_message")}
    assert bodies == {"m0", "m1", "m2", "before", "after", "after restart", "m6"}
    titles = {title for (title,) in await pg.query("SELECT title FROM notifications_notification")}
    assert titles == {"n0", "n1", "n2", "n6"}
    log = worker.log()
    assert "Traceback" not in log, log
    assert "backing service unavailable" in log  # each refusal is logged, as a one-line warning


BACKENDS = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'relay' AND pid <> pg_backend_pid()"


async def test_http_requests_leave_no_database_connection_open(stack):
    """Under ASGI each request has a thread of its own: a connection it kept would never be reused."""
    poster = Poster([stack.worker.url], stack.key)
    for round_ in range(4):
        await asyncio.gather(*(poster.post(round_ * 20 + n) for n in range(20)))
    assert {status for _, status, _ in poster.answers} == {201, 202}

    async def closed():
        # Backends of the worker; the socket handlers' one connection may stay.
        (count,) = (await stack.pg.query(BACKENDS))[0]
        return count <= 1

    await poll(closed, seconds=10, what="the requests' database connections closed")
