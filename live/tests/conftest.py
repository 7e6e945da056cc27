"""Live topics' fixtures: declarations, and values that never outlive their test."""

from __future__ import annotations

import pytest
from django.conf import settings

from live import selectors, services
from live.models import Topic
from realtime import redis_client


@pytest.fixture(autouse=True)
def _fresh_topics():
    """Each test starts with no cached declarations, and its topics' values are deleted after it."""
    selectors.forget_rules()
    yield
    selectors.forget_rules()
    if redis_client.configured():
        client = redis_client.sync_client()
        pattern = f"{redis_client.namespaced(settings.LIVE_KEY_PREFIX)}:*"
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    else:
        from live import store

        with store._memory.lock:
            store._memory.values.clear()


@pytest.fixture
def stocks(db):
    """`stocks.`: public, clients may not publish (as seed_demo declares it)."""
    return services.declare_topic(name="stocks.", match=Topic.Match.PREFIX, read=Topic.Read.PUBLIC)


@pytest.fixture
def scores(db):
    """`scores.`: logged-in users only; they may publish (3 at once, then 1 a second)."""
    return services.declare_topic(
        name="scores.",
        match=Topic.Match.PREFIX,
        read=Topic.Read.AUTHENTICATED,
        client_publish=True,
        publish_rate=1.0,
        publish_burst=3,
    )
