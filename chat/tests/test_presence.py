"""Presence across processes and after a worker dies (Redis), and the backends' rules."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings

from conftest import receive_type, session_cookie
from realtime.presence import MemoryPresence, RedisPresence, get_presence
from realtime.protocol import room_group

pytestmark = pytest.mark.django_db(transaction=True)


async def enter(socket_for, user, slug="lobby"):
    socket = await socket_for(f"/ws/chat/{slug}/", user)
    return socket, await receive_type(socket, "welcome")


def worker_env(session_key: str) -> dict[str, str]:
    """The environment of a second worker: same database, Redis and key prefixes as this test."""
    db = django_settings.DATABASES["default"]
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": django_settings.REDIS_URL,
        "CHANNEL_LAYER_PREFIX": django_settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
        "PRESENCE_KEY_PREFIX": django_settings.PRESENCE_KEY_PREFIX,
        "DJANGO_SECRET_KEY": django_settings.SECRET_KEY,
        "WORKER_SESSION_COOKIE": session_key,
        "LOG_LEVEL": "WARNING",
    }


@pytest.mark.redis
@pytest.mark.postgres
async def test_presence_is_shared_by_two_worker_processes(socket_for, alice, bob, lobby):
    """Bob's socket in another process sees Alice online, and Alice sees him join and leave."""
    alices, welcome = await enter(socket_for, alice)
    assert welcome["online"] == ["alice"]
    key = await sync_to_async(session_cookie)(bob)
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chat.tests.presence_worker",
        "/ws/chat/lobby/",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=worker_env(key),
        cwd=str(django_settings.BASE_DIR),
    )
    try:
        line = await asyncio.wait_for(worker.stdout.readline(), 60)
        assert json.loads(line) == ["alice", "bob"]
        assert await receive_type(alices, "presence", wait=20) == {
            "type": "presence",
            "online": ["alice", "bob"],
            "joined": "bob",
        }
        worker.stdin.write(b"close\n")
        await worker.stdin.drain()
        assert (await asyncio.wait_for(worker.stdout.readline(), 60)).strip() == b"closed"
        assert await receive_type(alices, "presence", wait=20) == {
            "type": "presence",
            "online": ["alice"],
            "left": "bob",
        }
    finally:
        if worker.returncode is None:
            worker.kill()
        await worker.wait()


@pytest.mark.redis
async def test_a_dead_workers_entry_expires_and_its_user_leaves(socket_for, alice, lobby, settings):
    """An entry nobody refreshes (its worker died) drops out, and the room hears `left`."""
    settings.PRESENCE_TTL_SECONDS = 30
    settings.PRESENCE_HEARTBEAT_SECONDS = 0.05
    presence = get_presence()
    assert isinstance(presence, RedisPresence)
    redis, _ = presence.client()
    seconds, micros = await redis.time()
    now = seconds + micros / 1_000_000
    key = presence.key(room_group(lobby.id))
    # A socket of a worker that crashed: its entry expires shortly, and nobody refreshes it.
    await redis.zadd(key, {"specific.deadworker!abc|carol": now + 0.5})
    # One already expired: never reported online at all.
    await redis.zadd(key, {"specific.deadworker!def|dave": now - 1})
    alices, welcome = await enter(socket_for, alice)
    assert welcome["online"] == ["alice", "carol"]
    # Alice's own heartbeats notice the expiry.
    assert await receive_type(alices, "presence", wait=20) == {
        "type": "presence",
        "online": ["alice"],
        "left": "carol",
    }
    _, welcome = await enter(socket_for, alice)
    assert welcome["online"] == ["alice"]
    assert all(b"deadworker" not in member for member in await redis.zrange(key, 0, -1))


async def test_memory_backend_counts_a_user_once_and_expires_entries(settings):
    """The in-process backend keeps the same rules: first in joins, last out leaves, stale entries go."""
    settings.PRESENCE_TTL_SECONDS = 60
    presence = MemoryPresence()
    first = await presence.join("room.1", socket="s1", user="alice")
    assert (first.online, first.joined, first.left) == (["alice"], ["alice"], [])
    second = await presence.join("room.1", socket="s2", user="alice")
    assert (second.online, second.joined, second.left) == (["alice"], [], [])
    assert (await presence.leave("room.1", socket="s1", user="alice")).left == []
    await presence.join("room.1", socket="s3", user="bob")
    # Their workers die: nothing refreshes the entries, and they are past their expiry.
    entries = presence._groups[presence.key("room.1")]
    for member in entries:
        entries[member] = 0.0
    change = await presence.join("room.1", socket="s4", user="carol")
    assert (change.online, change.joined, sorted(change.left)) == (["carol"], ["carol"], ["alice", "bob"])
