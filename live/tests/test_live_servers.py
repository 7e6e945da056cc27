"""`/ws/live/` under every server the project runs under (realtime.launcher.SERVERS): conflation for a
socket that stops reading, the order of what a socket gets, and subscriptions a changed declaration ends.

One worker per launcher, started together and shared by the module's tests,
on this test's PostgreSQL and Redis. Values go out through each server's
pre-framed writer and replies through its ASGI send, so both are checked
under each.

Conflation: one client subscribes and stops reading (a small receive buffer,
and a client library that stops taking frames from its socket once two are
queued); another reads everything. A topic then changes 1,000 times, 16 KiB a
value: 16 MB, far more than the kernel's buffers and the worker's cut-off for
slow clients (WS_MAX_BUFFER_BYTES, set to 1 MiB here), so without conflation
the slow client would be cut off.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from websockets.asyncio.client import connect

from live import services
from live.models import Topic
from realtime.authentication.tokens import issue_token
from realtime.launcher import SERVERS, Worker, http_get
from testsupport.faults import poll
from testsupport.processes import server_env
from testsupport.servers import every_server, receive_json, token_socket

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT = 30.0
CHANGES = 1000
PAD = "x" * (16 * 1024)
LIVE_BUFFER_BYTES = 128 * 1024

publish = sync_to_async(services.publish_topic)


@pytest.fixture(scope="module")
def servers(django_db_setup, tmp_path_factory):
    """Every server of SERVERS on the test database, started at once; {name: Worker}."""
    tag = uuid.uuid4().hex[:10]
    env = server_env(tag) | {
        "WS_MAX_BUFFER_BYTES": str(1024 * 1024),
        "LIVE_BUFFER_BYTES": str(LIVE_BUFFER_BYTES),
        # Anonymous sockets counted among these workers only, not with other tests' of this address.
        "WS_SOCKETS_KEY_PREFIX": f"test-sockets-{tag}",
    }
    with every_server(env, tmp_path_factory.mktemp("live-servers")) as started:
        yield started


@pytest.fixture
def stocks_topics(db):
    """`stocks.`: public, values up to 32 KiB."""
    return services.declare_topic(
        name="stocks.", match=Topic.Match.PREFIX, read=Topic.Read.PUBLIC, max_bytes=32 * 1024
    )


def metric(worker: Worker, name: str) -> float:
    status, body = http_get(f"{worker.url}/metrics", 5)
    assert status == 200, body
    return float(re.search(rf"^{name} (\S+)$", body, re.M).group(1))


async def slow_socket(worker: Worker):
    """A client that stops reading: a 4 KiB receive buffer, and at most two frames queued in the library."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", worker.port))
    return await connect(f"{worker.ws}/ws/live/", sock=raw, max_queue=2, ping_interval=None, open_timeout=10)


@pytest.mark.parametrize("server", list(SERVERS))
async def test_a_reader_that_stops_gets_the_latest_value_and_the_worker_holds_a_bound(
    server, servers, stocks_topics
):
    """1,000 changes while a socket does not read: it is not cut off, then reads newer values only, ending
    with the 1,000th; the worker's held bytes stay near LIVE_BUFFER_BYTES, not the 16 MB published."""
    worker = servers[server]
    mark = worker.log_size()
    conflated_before = await asyncio.to_thread(metric, worker, "relay_live_conflated_total")
    slow = await slow_socket(worker)
    fast = await connect(f"{worker.ws}/ws/live/", open_timeout=10, max_queue=None)
    for ws in (slow, fast):
        await ws.send(json.dumps({"type": "subscribe", "topics": ["stocks.hot"]}))
        await receive_json(ws, "subscribed", WAIT)

    held = []
    for i in range(CHANGES):
        await publish("stocks.hot", {"i": i, "pad": PAD})
        if i % 100 == 99:
            held.append(await asyncio.to_thread(metric, worker, "relay_live_buffered_bytes"))
    # The fast reader has seen the last change: the worker has offered it to the slow one too.
    seq = 0
    while seq < CHANGES:
        seq = (await receive_json(fast, "update", WAIT))["seq"]
    held.append(await asyncio.to_thread(metric, worker, "relay_live_buffered_bytes"))
    # Both sockets' connections and waiting values: a few frames over the bound each, never the backlog.
    bound = 2 * (LIVE_BUFFER_BYTES + 3 * len(PAD))
    assert max(held) < bound, held
    # And the gauge sees the connection's unsent bytes, not only the values waiting: the slow
    # socket's connection was filled up to the bound before values waited.
    assert held[-1] >= LIVE_BUFFER_BYTES, held
    assert await asyncio.to_thread(metric, worker, "relay_live_conflated_total") > conflated_before

    seqs = []
    while not seqs or seqs[-1] < CHANGES:
        frame = await receive_json(slow, "update", WAIT)
        seqs.append(frame["seq"])
    assert frame["data"]["i"] == CHANGES - 1
    assert seqs == sorted(set(seqs)), "never an older value after a newer one"
    assert len(seqs) < CHANGES, "a backlog was sent instead of the latest values"
    await slow.send(json.dumps({"type": "ping"}))
    assert (await receive_json(slow, "pong", WAIT)) == {"type": "pong"}
    assert "slow_client_dropped" not in worker.log_since(mark)
    # The figures docs/protocol.md quotes (`pytest -rP` shows them).
    print(f"{server}: held at most {max(held):,.0f} bytes; {len(seqs)} updates after resuming")
    await slow.close()
    await fast.close()


@pytest.mark.parametrize("server", list(SERVERS))
async def test_replies_and_values_arrive_in_order_and_nothing_after_unsubscribed(
    server, servers, stocks_topics
):
    """Errors first, then `subscribed` in the frame's order, updates as published, nothing of a topic after
    its `unsubscribed`, then `pong`: replies (ASGI sends) and values (pre-framed writes) keep their order."""
    worker = servers[server]
    await publish("stocks.aapl", {"price": 1})
    ws = await connect(f"{worker.ws}/ws/live/", open_timeout=10)
    topics = ["nope.x", "stocks.aapl", "stocks.msft"]
    await ws.send(json.dumps({"type": "subscribe", "topics": topics, "ref": "r1"}))
    error = await receive_json(ws, "error", WAIT)
    assert (error["code"], error["topic"], error["ref"]) == ("unknown_topic", "nope.x", "r1")
    first = await receive_json(ws, "subscribed", WAIT)
    second = await receive_json(ws, "subscribed", WAIT)
    assert (first["topic"], first["seq"], first["data"]) == ("stocks.aapl", 1, {"price": 1})
    assert (second["topic"], second["seq"], second["data"]) == ("stocks.msft", None, None)

    await publish("stocks.msft", 2)
    await publish("stocks.aapl", 3)
    updates = [await receive_json(ws, "update", WAIT) for _ in range(2)]
    assert [(u["topic"], u["seq"], u["data"]) for u in updates] == [
        ("stocks.msft", 1, 2),
        ("stocks.aapl", 2, 3),
    ]

    await ws.send(json.dumps({"type": "unsubscribe", "topics": ["stocks.aapl"]}))
    assert await receive_json(ws, "unsubscribed", WAIT) == {"type": "unsubscribed", "topics": ["stocks.aapl"]}
    await publish("stocks.aapl", 4)
    await publish("stocks.msft", 5)
    update = await receive_json(ws, "update", WAIT)
    assert (update["topic"], update["data"]) == ("stocks.msft", 5)
    await ws.send(json.dumps({"type": "ping"}))
    assert await receive_json(ws, "pong", WAIT) == {"type": "pong"}
    await ws.close()


def _admin_change(topic_id: int, admin, **fields: str) -> None:
    """Change a declaration through the admin's change form, as a person would."""
    client = Client()
    client.force_login(admin)
    url = f"/admin/live/topic/{topic_id}/change/"
    data = {k: v for k, v in client.get(url).context["adminform"].form.initial.items() if v is not None}
    data.pop("groups", None)
    if not data.get("client_publish"):
        data.pop("client_publish", None)  # an unticked box is absent from a form's post
    data.update(fields)
    response = client.post(url, data)
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors


def _admin_delete(topic_id: int, admin) -> None:
    client = Client()
    client.force_login(admin)
    assert client.post(f"/admin/live/topic/{topic_id}/delete/", {"post": "yes"}).status_code == 302


async def declared(worker: Worker, topic: str) -> bool:
    """Whether `worker` knows a declaration covering `topic` (its topic API answers, not 404)."""
    status, _ = await asyncio.to_thread(http_get, f"{worker.url}/api/topics/{topic}/", 5)
    return status == 200


async def subscribe(ws, *topics: str) -> list[str]:
    """Subscribe; the type of the answer to each topic."""
    await ws.send(json.dumps({"type": "subscribe", "topics": list(topics)}))
    return [json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] for _ in topics]


@pytest.mark.parametrize("server", list(SERVERS))
async def test_a_declaration_changed_or_deleted_in_the_admin_ends_subscriptions_on_every_worker(
    server, servers, alice, make_user, stocks_topics
):
    """`board.` made logged-in only in the admin: an anonymous socket on this server gets `forbidden`
    naming the topic and no more of it, alice's on another server keeps hers; deleted in the admin: she
    gets `unknown_topic`."""
    names = list(SERVERS)
    worker, other = servers[server], servers[names[(names.index(server) + 1) % len(names)]]
    admin = await sync_to_async(make_user)("root", is_staff=True, is_superuser=True)
    board = await sync_to_async(services.declare_topic)(
        name="board.", match=Topic.Match.PREFIX, read=Topic.Read.PUBLIC
    )
    for declared_on in (worker, other):
        # These workers outlive a test: they hear of the new declaration shortly after its commit.
        await poll(lambda w=declared_on: declared(w, "board.x"), seconds=WAIT, what="board. declared")
    anonymous = await connect(f"{worker.ws}/ws/live/", open_timeout=10)
    assert await subscribe(anonymous, "board.x", "stocks.aapl") == ["subscribed", "subscribed"]
    alices = await token_socket(f"{other.ws}/ws/live/", (await sync_to_async(issue_token)(user=alice)).access)
    assert await subscribe(alices, "board.x") == ["subscribed"]

    await sync_to_async(_admin_change)(board.pk, admin, read=Topic.Read.AUTHENTICATED)
    ended = await receive_json(anonymous, "error", WAIT)
    assert (ended["code"], ended["topic"]) == ("forbidden", "board.x")
    await publish("board.x", 1)
    await publish("stocks.aapl", 2)
    assert (await receive_json(alices, "update", WAIT))["data"] == 1
    update = await receive_json(anonymous, "update", WAIT)
    assert (update["topic"], update["data"]) == ("stocks.aapl", 2), "nothing of board.x after its error"

    await sync_to_async(_admin_delete)(board.pk, admin)
    ended = await receive_json(alices, "error", WAIT)
    assert (ended["code"], ended["topic"]) == ("unknown_topic", "board.x")
    await anonymous.close()
    await alices.close()
