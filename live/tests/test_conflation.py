"""Conflation on a real server: a socket that stops reading gets the latest value later, and costs a bound.

A worker subprocess (each launcher with a pre-framed writer), this test's
PostgreSQL and Redis. One client subscribes and stops reading (a small
receive buffer, and a client library that stops taking frames from its
socket once two are queued); another reads everything. A topic then changes
1,000 times, 16 KiB a value: 16 MB, far more than the kernel's buffers and
the worker's cut-off for slow clients (WS_MAX_BUFFER_BYTES, set to 1 MiB
here), so without conflation the slow client would be cut off.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid

import pytest
from asgiref.sync import sync_to_async

from live import services
from live.models import Topic
from realtime.launcher import Worker, http_get
from testsupport.processes import ARTIFACTS, server_env
from testsupport.servers import receive_json

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT = 30.0
CHANGES = 1000
PAD = "x" * (16 * 1024)
LIVE_BUFFER_BYTES = 128 * 1024


def buffered_bytes(worker: Worker) -> float:
    status, body = http_get(f"{worker.url}/metrics", 5)
    assert status == 200, body
    return float(re.search(r"^relay_live_buffered_bytes (\S+)$", body, re.M).group(1))


def conflated(worker: Worker) -> float:
    _, body = http_get(f"{worker.url}/metrics", 5)
    return float(re.search(r"^relay_live_conflated_total (\S+)$", body, re.M).group(1))


async def slow_socket(worker: Worker):
    """A client that stops reading: a 4 KiB receive buffer, and at most two frames queued in the library."""
    from websockets.asyncio.client import connect

    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", worker.port))
    return await connect(f"{worker.ws}/ws/live/", sock=raw, max_queue=2, ping_interval=None, open_timeout=10)


@pytest.mark.parametrize("server", ["realtime.serve", "uvicorn-websockets"])
async def test_a_reader_that_stops_gets_the_latest_value_and_the_worker_holds_a_bound(request, server):
    """1,000 changes while a socket does not read: it is not cut off, then reads newer values only, ending
    with the 1,000th; the worker's held bytes stay near LIVE_BUFFER_BYTES, not the 16 MB published."""
    from websockets.asyncio.client import connect

    await sync_to_async(services.declare_topic)(
        name="stocks.", match=Topic.Match.PREFIX, read=Topic.Read.PUBLIC, max_bytes=32 * 1024
    )
    env = {**server_env(uuid.uuid4().hex[:10]), "WS_MAX_BUFFER_BYTES": str(1024 * 1024)}
    env["LIVE_BUFFER_BYTES"] = str(LIVE_BUFFER_BYTES)
    ARTIFACTS.mkdir(exist_ok=True)
    worker = Worker(server, env=env, log_path=ARTIFACTS / f"conflation-{server}.log", stop_grace=0)
    await worker.astart()
    try:
        slow = await slow_socket(worker)
        fast = await connect(f"{worker.ws}/ws/live/", open_timeout=10, max_queue=None)
        for ws in (slow, fast):
            await ws.send(json.dumps({"type": "subscribe", "topics": ["stocks.hot"]}))
            await receive_json(ws, "subscribed", WAIT)

        publish = sync_to_async(services.publish_topic)
        held = []
        for i in range(CHANGES):
            await publish("stocks.hot", {"i": i, "pad": PAD})
            if i % 100 == 99:
                held.append(await asyncio.to_thread(buffered_bytes, worker))
        # The fast reader has seen the last change: the worker has offered it to the slow one too.
        seq = 0
        while seq < CHANGES:
            seq = (await receive_json(fast, "update", WAIT))["seq"]
        held.append(await asyncio.to_thread(buffered_bytes, worker))
        # Both sockets' connections and waiting values: a few frames over the bound each, never the backlog.
        bound = 2 * (LIVE_BUFFER_BYTES + 3 * len(PAD))
        assert max(held) < bound, held
        assert await asyncio.to_thread(conflated, worker) > 0

        seqs = []
        while not seqs or seqs[-1] < CHANGES:
            frame = await receive_json(slow, "update", WAIT)
            seqs.append(frame["seq"])
        assert frame["data"]["i"] == CHANGES - 1
        assert seqs == sorted(set(seqs)), "never an older value after a newer one"
        assert len(seqs) < CHANGES, "a backlog was sent instead of the latest values"
        await slow.send(json.dumps({"type": "ping"}))
        assert (await receive_json(slow, "pong", WAIT)) == {"type": "pong"}
        assert "slow_client_dropped" not in worker.log()
        await slow.close()
        await fast.close()
    finally:
        await worker.astop()
