"""Chat test fixtures: rooms, and Redis keys of each test's own."""

from __future__ import annotations

import uuid

import pytest
from channels.layers import channel_layers

from chat import services
from chat.presence import get_store


@pytest.fixture(autouse=True)
async def own_redis_keys(settings):
    """Presence and rate-limit keys under a prefix of this test's own, and a fresh channel layer.

    channels_redis keeps receive state (a lock bound to one event loop) on the
    layer object; a socket torn down by a timeout in one test's loop must not
    poison the next test, which runs on a new loop.
    """
    channel_layers.backends.clear()
    tag = uuid.uuid4().hex[:10]
    settings.PRESENCE_KEY_PREFIX = f"test-presence-{tag}"
    settings.CHAT_RATE_KEY_PREFIX = f"test-rate-{tag}"
    yield
    presence = get_store()
    if hasattr(presence, "aclose"):
        await presence.aclose()


@pytest.fixture
def lobby(db):
    return services.create_room(slug="lobby", title="Lobby")


@pytest.fixture
def other_room(db):
    return services.create_room(slug="other", title="Other")


@pytest.fixture
def secret_room(db, alice, bob):
    return services.create_room(slug="secret", title="Secret", private=True, members=[alice, bob])
