"""This test run: its own names in a shared Redis, what CI requires of it, and clean-up at its end.

Tests run against whatever DATABASE_URL and REDIS_URL say. `make test` in CI
points them at PostgreSQL and Redis; there, a test marked `redis` or
`postgres` fails when its service is missing instead of being skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator

import pytest
from django.conf import settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def configure() -> None:
    """The settings of a test run: no persistent connections, and names of its own in a shared Redis.

    Parallel runs, and a `make run` on the same Redis, never hear each other or
    touch each other's keys. The run's namespace (realtime/redis_client.py) is
    in every one of them; subprocesses get the names too (`processes.subprocess_env`).
    """
    from realtime.redis_client import layer_prefix

    # Socket handlers reach the database from a thread pool; persistent
    # connections there would outlive the test database.
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    run = f"test-{uuid.uuid4().hex[:8]}"
    settings.REDIS_NAMESPACE = run
    layer = settings.CHANNEL_LAYERS["default"]
    if "hosts" in layer.get("CONFIG", {}):  # a Redis layer (core or pub/sub), not the in-memory one
        layer["CONFIG"]["prefix"] = layer_prefix(settings.CHANNEL_LAYER_PREFIX, run)
        # Each layer connection names itself (CLIENT SETNAME), so a test that
        # cuts them, as a Redis restart would, finds its own and no one else's.
        layer["CONFIG"]["hosts"] = [{**host, "client_name": run} for host in layer["CONFIG"]["hosts"]]
    settings.PRESENCE_KEY_PREFIX = f"{run}-presence"
    settings.CHAT_RATE_KEY_PREFIX = f"{run}-rate"
    settings.WS_SOCKETS_KEY_PREFIX = f"{run}-sockets"
    settings.LOGIN_THROTTLE_KEY_PREFIX = f"{run}-login"
    settings.LIVE_KEY_PREFIX = f"{run}-live"


@contextlib.asynccontextmanager
async def keys_of_its_own(settings) -> AsyncIterator[None]:
    """Presence and rate-limit keys under a prefix of this test's own, and a fresh channel layer.

    `settings` is pytest-django's fixture (restored after the test).
    channels_redis keeps receive state (a lock bound to one event loop) on the
    layer object; a socket torn down by a timeout in one test's loop must not
    poison the next test, which runs on a new loop.
    """
    from channels.layers import channel_layers

    from chat.presence import get_store

    channel_layers.backends.clear()
    tag = uuid.uuid4().hex[:10]
    settings.PRESENCE_KEY_PREFIX = f"test-presence-{tag}"
    settings.CHAT_RATE_KEY_PREFIX = f"test-rate-{tag}"
    yield
    presence = get_store()
    if hasattr(presence, "aclose"):
        await presence.aclose()


def skip_unavailable(items: list[pytest.Item]) -> None:
    """Skip tests whose service is not configured; in CI, refuse to run without both."""
    using_redis = bool(settings.REDIS_URL)
    using_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    if IN_CI and not (using_redis and using_postgres):
        raise pytest.UsageError("CI must run with DATABASE_URL (PostgreSQL) and REDIS_URL set")
    for item in items:
        if item.get_closest_marker("redis") and not using_redis:
            item.add_marker(pytest.mark.skip(reason="REDIS_URL is not set"))
        if item.get_closest_marker("postgres") and not using_postgres:
            item.add_marker(pytest.mark.skip(reason="DATABASE_URL is not PostgreSQL"))


def close_thread_connections() -> None:
    """Close what test threads left open, so pytest-django can drop the test database.

    Tests reach the database from threads of their own: asgiref's `sync_to_async`
    thread and the socket handlers' lanes (realtime/db.py), which keep their
    connections between calls.
    """
    from asgiref.sync import sync_to_async
    from django.db import connections

    from realtime import db

    asyncio.run(sync_to_async(connections.close_all)())
    db.close_connections()
