"""Chat test fixtures: rooms beside the root conftest's `lobby`, and Redis keys of each test's own."""

from __future__ import annotations

import pytest

from chat import services


@pytest.fixture(autouse=True)
def _every_chat_test_has_own_redis_keys(own_redis_keys):
    """The root conftest's `own_redis_keys`, for every chat test."""


@pytest.fixture
def other_room(db):
    return services.create_room(slug="other", title="Other")


@pytest.fixture
def secret_room(db, alice, bob):
    return services.create_room(slug="secret", title="Secret", private=True, members=[alice, bob])
