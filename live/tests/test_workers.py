"""Live topics across two worker processes on this test's PostgreSQL and Redis.

Each test starts two workers under different servers; publishes come through
the HTTP API of either, a client's `publish` frame, or this process.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from websockets.asyncio.client import connect

from realtime.authentication.apikeys import create_api_key
from realtime.authentication.tokens import issue_token
from realtime.launcher import Worker, http_get
from testsupport.faults import fault_worker, start_workers
from testsupport.handshakes import credentials_locked, until_in_progress, until_refused
from testsupport.processes import ARTIFACTS, run_manage, server_env
from testsupport.servers import browser_opening, publish, receive_json, token_socket

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT = 20.0
SERVERS = ("realtime.serve", "uvicorn-websockets")


async def two_workers(request, **env: str) -> list[Worker]:
    # Socket counts of these workers' own: sockets this test process opened in
    # earlier tests (same address, same run) must not count against the cap.
    return await start_workers(
        request, *SERVERS, WS_SOCKETS_KEY_PREFIX=f"test-sockets-{uuid.uuid4().hex[:10]}", **env
    )


async def subscribe(ws, *topics: str) -> list[dict]:
    """Subscribe; the answer to each topic (`subscribed`, or an error naming it)."""
    await ws.send(json.dumps({"type": "subscribe", "topics": list(topics)}))
    return [json.loads(await asyncio.wait_for(ws.recv(), WAIT)) for _ in topics]


async def test_values_reach_subscribers_on_both_workers_and_anonymous_sockets_read_public_only(
    request, alice, bob, stocks, scores
):
    """A publish on either worker reaches both; anonymous ones read public topics only, capped per address."""
    a, b = await two_workers(request, LIVE_ANONYMOUS_SOCKETS_PER_ADDRESS="2")
    try:
        anonymous = [await connect(f"{worker.ws}/ws/live/", open_timeout=10) for worker in (a, b)]
        for ws in anonymous:
            answers = await subscribe(ws, "stocks.aapl", "scores.final")
            answered = sorted((f["type"], f["topic"], f.get("code")) for f in answers)
            assert answered == [("error", "scores.final", "forbidden"), ("subscribed", "stocks.aapl", None)]
        third = await connect(f"{a.ws}/ws/live/", open_timeout=10)  # the address's third anonymous socket
        await asyncio.wait_for(third.wait_closed(), WAIT)
        assert (third.close_code, third.close_reason) == (4429, "too_many_sockets")

        _, key = await sync_to_async(create_api_key)(name="feed")
        status, body = await asyncio.to_thread(
            publish, a.url, key, "/api/publish/topics/stocks.aapl/", {"data": 1}
        )
        assert (status, body) == (202, {"seq": 1})
        for ws in anonymous:
            assert (await receive_json(ws, "update", WAIT))["data"] == 1

        tokens = [(await sync_to_async(issue_token)(user=user)).access for user in (alice, bob)]
        alices = await token_socket(f"{b.ws}/ws/live/", tokens[0])
        bobs = await token_socket(f"{a.ws}/ws/live/", tokens[1])
        assert [f["type"] for f in await subscribe(bobs, "scores.final")] == ["subscribed"]
        await alices.send(json.dumps({"type": "publish", "topic": "scores.final", "data": {"home": 3}}))
        update = await receive_json(bobs, "update", WAIT)
        assert (update["topic"], update["seq"], update["data"]) == ("scores.final", 1, {"home": 3})
        for ws in (*anonymous, alices, bobs):
            await ws.close()
    finally:
        await asyncio.gather(a.astop(), b.astop())


async def test_publishes_racing_on_two_workers_get_each_seq_once_and_arrive_in_order(request, stocks):
    """100 publishes through each worker at once: seqs 1..200 once each; subscribers see them rise to 200."""
    a, b = await two_workers(request)
    try:
        readers = [await connect(f"{worker.ws}/ws/live/", open_timeout=10) for worker in (a, b)]
        for ws in readers:
            assert (await subscribe(ws, "stocks.hot"))[0]["seq"] is None
        _, key = await sync_to_async(create_api_key)(name="feed")

        def publish_many(worker: Worker) -> list[int]:
            seqs = []
            for i in range(100):
                status, body = publish(worker.url, key, "/api/publish/topics/stocks.hot/", {"data": i})
                assert status == 202, body
                seqs.append(body["seq"])
            return seqs

        first, second = await asyncio.gather(*(asyncio.to_thread(publish_many, w) for w in (a, b)))
        assert sorted(first + second) == list(range(1, 201))
        for ws in readers:
            seqs = []
            while not seqs or seqs[-1] < 200:
                seqs.append((await receive_json(ws, "update", WAIT))["seq"])
            assert seqs == sorted(set(seqs)), "never an older value after a newer one"
            await ws.close()
        for worker in (a, b):
            status, body = await asyncio.to_thread(http_get, f"{worker.url}/api/topics/stocks.hot/", 5)
            assert (status, json.loads(body)["seq"]) == (200, 200)
    finally:
        await asyncio.gather(a.astop(), b.astop())


def readme_ticker(port: int):
    """README's Python stock-ticker client, as printed, pointed at `port` (a coroutine: the process)."""
    readme = (settings.BASE_DIR / "README.md").read_text()
    code = readme.split("(`pip install websockets`):\n\n```python\n", 1)[1].split("```", 1)[0]
    code = code.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    return asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE)


async def prints_the_published_price(client) -> None:
    """Publish stocks.aapl; the client's first line is that value, seq 1."""
    try:
        # Before or after the client subscribed: either way its first line is this value
        # (it prints nothing for a topic never published).
        await run_manage("publish_topic", "stocks.aapl", '{"price": 190.25}')
        line = await asyncio.wait_for(client.stdout.readline(), WAIT)
        assert line.decode().split() == ["stocks.aapl", "190.25", "seq", "1"]
    finally:
        client.kill()
        await client.wait()


async def test_the_readmes_ticker_client_prints_prices(request, stocks):
    """README's Python stock-ticker client, run as it is against a worker, prints the price published."""
    ARTIFACTS.mkdir(exist_ok=True)
    worker = fault_worker(server_env(uuid.uuid4().hex[:10]), ARTIFACTS / "readme-ticker.log")
    await worker.astart()
    try:
        await prints_the_published_price(await readme_ticker(worker.port))
    finally:
        await worker.astop()


async def test_the_readmes_ticker_client_waits_out_a_worker_shedding_load(stocks, alice):
    """A worker whose handshake queue is full refuses the client (503) until it drains; then it prints."""
    ARTIFACTS.mkdir(exist_ok=True)
    env = server_env(uuid.uuid4().hex[:10]) | {"WS_HANDSHAKE_QUEUE_LIMIT": "1"}
    worker = fault_worker(env, ARTIFACTS / "readme-ticker-shedding.log")
    await worker.astart()
    client = None
    try:
        browser = await browser_opening(f"{worker.ws}/ws/notifications/", alice, open_timeout=30)
        async with credentials_locked():  # the browser's handshake waits in its lookup: the queue is full
            held = asyncio.ensure_future(browser)
            await until_in_progress(worker.url, 1)
            client = await readme_ticker(worker.port)
            await until_refused(worker.url, 1)
        socket = await held
        await receive_json(socket, "welcome", WAIT)
        await socket.close()
        await prints_the_published_price(client)
    finally:
        if client is not None and client.returncode is None:
            client.kill()
            await client.wait()
        await worker.astop()
