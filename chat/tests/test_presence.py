"""Presence v2: the stores' rules, a worker's batching, and two worker processes on real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.db import database_sync_to_async

from chat.presence import Change, MemoryPresence, RedisPresence, _Room, member
from realtime.launcher import Worker
from testsupport.processes import live_worker, server_env
from testsupport.servers import browser_socket, get_json_as, receive_json

pytestmark = pytest.mark.django_db(transaction=True)

# Bounds a wait for a frame; generous because the machine may be busy, not a speed test.
WAIT = 20.0


def presence_frame(*, joined=(), left=(), count: int) -> dict:
    return {"type": "presence", "joined": list(joined), "left": list(left), "online_count": count}


# --- the stores --------------------------------------------------------------------------
@pytest.fixture(params=["memory", "redis"])
def store(request, settings):
    """Each store, with a key prefix of this test's own."""
    settings.PRESENCE_KEY_PREFIX = f"test-presence-{uuid.uuid4().hex[:10]}"
    if request.param == "redis":
        if not settings.REDIS_URL:
            pytest.skip("REDIS_URL is not set")
        return RedisPresence()
    return MemoryPresence()


def users_of(changes: list[Change]) -> list[tuple[str, bool]]:
    return [(user, online) for user, online, _ in changes]


async def expire(store, room: str, entry: str) -> None:
    """Make an entry look as if its worker stopped refreshing it long ago (it died)."""
    if isinstance(store, MemoryPresence):
        store._rooms[store.key(room)].entries[entry] = 0.0
        return
    client = store._script().registered_client
    await client.zadd(f"{store.key(room)}:e", {entry: 1})


async def test_a_user_with_two_sockets_joins_once_and_leaves_once(store):
    """The first socket in makes the user join, the last one out makes them leave; versions rise."""
    first = await store.join("room.1", entries=[member("s1", "alice")], first=10)
    assert users_of(first.changes) == [("alice", True)]
    assert (first.count, first.names) == (1, ["alice"])
    second = await store.join("room.1", entries=[member("s2", "alice")], first=10)
    assert (second.changes, second.count, second.names) == ([], 1, ["alice"])
    assert (await store.leave("room.1", entries=[member("s1", "alice")])).changes == []
    last = await store.leave("room.1", entries=[member("s2", "alice")])
    assert users_of(last.changes) == [("alice", False)]
    assert last.count == 0
    assert last.changes[0][2] > first.changes[0][2]


async def test_a_join_answers_the_first_names_and_the_count_only(store):
    """A join's answer holds at most `first` names, sorted, and the count of everyone."""
    for name in ["dave", "bob", "erin", "alice", "carol"]:
        outcome = await store.join("room.1", entries=[member(f"s-{name}", name)], first=3)
    assert (outcome.names, outcome.count) == (["alice", "bob", "carol"], 5)


async def test_expired_entries_leave_at_the_next_operation(store):
    """Entries nobody refreshed (a dead worker's) are removed by the next call, and their users leave."""
    await store.join("room.1", entries=[member("dead-1", "carol")], first=10)
    await store.join("room.1", entries=[member("dead-2", "carol")], first=10)
    await store.join("room.1", entries=[member("dead-3", "dave")], first=10)
    await store.join("room.1", entries=[member("live", "dave")], first=10)
    for entry in ("dead-1|carol", "dead-2|carol", "dead-3|dave"):
        await expire(store, "room.1", entry)
    outcome = await store.join("room.1", entries=[member("new", "erin")], first=10)
    assert sorted(users_of(outcome.changes)) == [("carol", False), ("erin", True)]
    assert (outcome.names, outcome.count) == (["dave", "erin"], 2)


async def test_a_refresh_keeps_entries_and_brings_back_swept_ones(store):
    """A heartbeat refreshes its entries; one that had expired and been swept joins again."""
    await store.join("room.1", entries=[member("s1", "alice")], first=10)
    await store.join("room.1", entries=[member("s2", "bob")], first=10)
    await expire(store, "room.1", "s2|bob")
    swept = await store.join("room.1", entries=[member("s3", "carol")], first=10)
    assert ("bob", False) in users_of(swept.changes)
    back = await store.refresh("room.1", entries=[member("s1", "alice"), member("s2", "bob")])
    assert users_of(back.changes) == [("bob", True)]
    assert back.count == 3


async def test_one_leave_call_takes_many_entries(store):
    """A batch of leaves: users whose last socket is in it leave, the others stay."""
    for i in range(5):
        await store.join("room.1", entries=[member(f"s{i}", f"user{i}")], first=1)
    await store.join("room.1", entries=[member("s0b", "user0")], first=1)
    outcome = await store.leave("room.1", entries=[member(f"s{i}", f"user{i}") for i in range(4)])
    assert sorted(users_of(outcome.changes)) == [("user1", False), ("user2", False), ("user3", False)]
    assert outcome.count == 2


async def test_pages_of_the_online_list_follow_the_names(store):
    """A page is the next `limit` names after `after`, sorted, with the count of everyone."""
    for name in ["carol", "alice", "erin", "bob", "dave"]:
        await store.join("room.1", entries=[member(f"s-{name}", name)], first=1)
    assert store.page("room.1", after=None, limit=2).names == ["alice", "bob"]
    page = store.page("room.1", after="bob", limit=2)
    assert (page.names, page.count) == (["carol", "dave"], 5)
    assert store.page("room.1", after="dave", limit=2).names == ["erin"]
    assert store.page("room.1", after="erin", limit=2).names == []


async def command_calls(client) -> int:
    """Commands this Redis ran since the last CONFIG RESETSTAT, scripts' own commands included."""
    stats = await client.info("commandstats")
    return sum(entry["calls"] for name, entry in stats.items() if name != "cmdstat_config")


@pytest.mark.redis
async def test_a_join_leave_second_tab_and_heartbeat_cost_the_same_in_a_room_of_10_and_of_2000(settings):
    """Redis commands per presence operation, counted on a private Redis, do not grow with the room."""
    from testsupport.faults import PrivateRedis

    redis = PrivateRedis()
    await redis.start()
    try:
        settings.REDIS_URL = redis.url
        store = RedisPresence()
        client = store._script().registered_client
        costs = {}
        for size in (10, 2000):
            room = f"room.{size}"
            await store.refresh(room, entries=[member(f"s{i}", f"user{i}") for i in range(size)])
            steps = {
                "join": store.join(room, entries=[member("a1", "alice")], first=100),
                "second tab": store.join(room, entries=[member("a2", "alice")], first=100),
                "heartbeat": store.refresh(room, entries=[member("a1", "alice"), member("a2", "alice")]),
                "leave": store.leave(room, entries=[member("a2", "alice")]),
                "last leave": store.leave(room, entries=[member("a1", "alice")]),
            }
            for step, operation in steps.items():
                await client.config_resetstat()
                outcome = await operation
                costs[size, step] = (await command_calls(client), len(outcome.names) <= 100)
        assert {step: costs[10, step] for step in steps} == {step: costs[2000, step] for step in steps}
        await client.aclose()
    finally:
        await redis.stop()


# --- one worker's batching -----------------------------------------------------------------
def test_a_join_and_a_leave_inside_one_interval_make_no_frame():
    """A user who came and went between two frames is in neither list, and nothing is sent."""
    room = _Room()
    room.note([("bob", True, 11)])
    room.note([("bob", False, 12)])
    assert room.take_frame(100) is None


def test_two_joins_make_one_frame_with_both():
    """Changes inside one interval leave as one frame with the net lists and the newest count."""
    room = _Room()
    room.note([("carol", True, 21)])
    room.note_count(2, 21)
    room.note([("bob", True, 22)])
    room.note_count(3, 22)
    assert room.take_frame(100) == presence_frame(joined=["bob", "carol"], count=3)


def test_changes_from_other_workers_out_of_order_end_in_the_right_state():
    """Versions put changes that crossed on their way from two workers back in order."""
    room = _Room()
    # Bob joined (13) and left (14) on two different workers; the leave arrived first.
    room.note([("bob", False, 14)])
    room.note([("bob", True, 13)])
    assert room.take_frame(100) is None
    # Carol left (15) and joined again (16), in the wrong order, across two frames.
    room.note([("carol", True, 16)])
    room.note_count(1, 16)
    assert room.take_frame(100) == presence_frame(joined=["carol"], count=1)
    room.note([("carol", False, 15)])
    assert room.take_frame(100) is None  # older than what was shown


def test_more_names_than_the_list_max_send_only_the_count():
    """Past PRESENCE_LIST_MAX changed names, the frame is truncated: empty lists and the count."""
    room = _Room()
    room.note([(f"user{i}", True, 100 + i) for i in range(4)])
    room.note_count(4, 103)
    assert room.take_frame(3) == {
        "type": "presence",
        "joined": [],
        "left": [],
        "online_count": 4,
        "truncated": True,
    }


# --- two worker processes on real Redis ----------------------------------------------------
async def two_workers(request, **overrides: str) -> list[Worker]:
    """Two `realtime.serve` workers sharing this test's database, Redis and key prefixes."""
    env = server_env(uuid.uuid4().hex[:10])
    env.update(overrides)
    name = request.node.name[:60]
    workers = [live_worker(env, log_name=f"{name}-{i}") for i in (1, 2)]
    await asyncio.gather(*(worker.astart(30) for worker in workers))
    return workers


@pytest.fixture
async def workers(request, transactional_db):
    """Two workers; a wide interval so that a test's steps fall inside one; small lists; short TTL."""
    started = await two_workers(
        request,
        PRESENCE_FLUSH_MS="3000",
        PRESENCE_LIST_MAX="3",
        PRESENCE_TTL_SECONDS="3",
        PRESENCE_HEARTBEAT_SECONDS="1",
    )
    yield started
    await asyncio.gather(*(worker.astop() for worker in started))


@pytest.fixture
def people(make_user):
    """Six users, by name."""
    return {name: make_user(name) for name in ("alice", "bob", "carol", "dave", "erin", "frank")}


@pytest.fixture
def private_room(people):
    """`trio`: a private room of alice and bob."""
    from chat import services

    return services.create_room(
        slug="trio", title="Trio", private=True, members=[people["alice"], people["bob"]]
    )


def socket_url(worker: Worker, slug: str = "lobby") -> str:
    return f"ws://127.0.0.1:{worker.port}/ws/chat/{slug}/"


async def join(worker: Worker, user, slug: str = "lobby"):
    socket = await browser_socket(socket_url(worker, slug), user)
    return socket, await receive_json(socket, "welcome", WAIT)


async def watch(worker: Worker, user):
    """A socket in the lobby that has seen its own arrival announced: from here on, frames are news."""
    socket, welcome = await join(worker, user)
    assert await receive_json(socket, "presence", WAIT) == presence_frame(
        joined=[user.username], count=welcome["online_count"]
    )
    return socket


@pytest.mark.redis
@pytest.mark.postgres
async def test_join_and_leave_in_one_interval_send_nothing_and_two_joins_one_frame(workers, people, lobby):
    """Across two workers: bob in and out unseen; carol and dave in one frame; erin in the next."""
    a, b = workers
    alices = await watch(a, people["alice"])
    bobs, _ = await join(b, people["bob"])
    await bobs.close()
    carols, _ = await join(b, people["carol"])
    daves, _ = await join(a, people["dave"])
    assert await receive_json(alices, "presence", WAIT) == presence_frame(joined=["carol", "dave"], count=3)
    erins, _ = await join(b, people["erin"])
    assert await receive_json(alices, "presence", WAIT) == presence_frame(joined=["erin"], count=4)
    for socket in (alices, carols, daves, erins):
        await socket.close()


@pytest.mark.redis
@pytest.mark.postgres
async def test_many_joins_send_a_truncated_frame_and_the_welcome_lists_the_first(workers, people, lobby):
    """More changes than PRESENCE_LIST_MAX (3) in one interval: the count alone; welcomes list 3 names."""
    a, b = workers
    users = list(people.values())
    alices = await watch(a, users[0])
    places = zip([b, a, b, a], users[1:5], strict=True)
    joined = await asyncio.gather(*(join(worker, user) for worker, user in places))
    assert await receive_json(alices, "presence", WAIT) == {
        "type": "presence",
        "joined": [],
        "left": [],
        "online_count": 5,
        "truncated": True,
    }
    franks, welcome = await join(b, users[5])
    assert (welcome["online"], welcome["online_count"]) == (["alice", "bob", "carol"], 6)
    for socket in (alices, franks, *(socket for socket, _ in joined)):
        await socket.close()


@pytest.mark.redis
@pytest.mark.postgres
async def test_the_online_list_is_paged_over_http_from_either_worker(workers, people, lobby, private_room):
    """GET .../online/ pages the names of users on both workers, sorted, with the count."""
    a, b = workers
    names = ["alice", "bob", "carol", "dave", "erin"]
    users = people
    sockets = [await join(worker, users[name]) for worker, name in zip([a, b, a, b, a], names, strict=True)]
    fetch = database_sync_to_async(get_json_as)
    path = "/api/chat/rooms/lobby/online/"
    assert await fetch(a.url, f"{path}?limit=2", users["carol"]) == (
        200,
        {"results": ["alice", "bob"], "next_after": "bob", "online_count": 5},
    )
    assert await fetch(b.url, f"{path}?limit=2&after=bob", users["carol"]) == (
        200,
        {"results": ["carol", "dave"], "next_after": "dave", "online_count": 5},
    )
    assert await fetch(a.url, f"{path}?limit=2&after=dave", users["carol"]) == (
        200,
        {"results": ["erin"], "next_after": None, "online_count": 5},
    )
    # Without a limit, a page is as long as the welcome's list (PRESENCE_LIST_MAX, 3 here).
    status, body = await fetch(a.url, path, users["erin"])
    assert (status, body["results"], body["next_after"]) == (200, names[:3], "carol")
    # The private room answers its members only; the others get 403.
    assert (await fetch(b.url, "/api/chat/rooms/trio/online/", users["carol"]))[0] == 403
    assert (await fetch(b.url, "/api/chat/rooms/trio/online/", users["alice"]))[1]["online_count"] == 0
    assert (await fetch(a.url, f"{path}?limit=0", users["carol"]))[1]["error"] == "invalid_message"
    assert (await fetch(a.url, f"{path}?after={'x' * 151}", users["carol"]))[1]["error"] == "invalid_message"
    for socket, _ in sockets:
        await socket.close()


@pytest.mark.redis
@pytest.mark.postgres
async def test_a_dead_workers_users_leave_within_the_ttl(workers, people, lobby):
    """SIGKILL a worker: its users (one with two tabs) leave on the other worker's sockets."""
    a, b = workers
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    alices = await watch(a, alice)
    for user in (bob, bob, carol):
        await join(b, user)
    assert await receive_json(alices, "presence", WAIT) == presence_frame(joined=["bob", "carol"], count=3)
    b.process.kill()  # no drain, no leave: only the entries' expiry can tell
    await b.exited(10)
    assert await receive_json(alices, "presence", WAIT) == presence_frame(left=["bob", "carol"], count=1)
    _, welcome = await join(a, carol)
    assert (welcome["online"], welcome["online_count"]) == (["alice", "carol"], 2)
