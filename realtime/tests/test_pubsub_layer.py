"""The pub/sub channel layer's group membership under many changes at once (realtime/adapter/pubsub_layer.py).

Against the shared Redis, on channel names of this test's own prefix.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from types import SimpleNamespace

import pytest

from realtime.fanout.layer import RelayPubSubChannelLayer
from realtime.redis_client import layer_host

pytestmark = [pytest.mark.redis]


@pytest.fixture
async def layer():
    conf = SimpleNamespace(
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        REDIS_SENTINELS=[],
        REDIS_SOCKET_TIMEOUT=6.0,
        REDIS_CONNECT_TIMEOUT=1.0,
        REDIS_MAX_CONNECTIONS=100,
    )
    layer = RelayPubSubChannelLayer(hosts=[layer_host(conf)], prefix=f"test-{uuid.uuid4().hex[:8]}")
    try:
        yield layer
    finally:
        await layer.flush()


async def received(layer, channel: str) -> str:
    return (await asyncio.wait_for(layer.receive(channel), 10))["type"]


async def test_a_group_left_and_joined_again_at_once_still_gets_its_messages(layer):
    """A group's last socket leaving while a new one joins (in one batch of changes): it stays subscribed."""
    hub = await layer.new_channel()
    await layer.group_add("room", hub)
    await asyncio.gather(layer.group_discard("room", hub), layer.group_add("room", hub))
    await layer.group_send("room", {"type": "after"})
    assert await received(layer, hub) == "after"


async def test_thousands_of_groups_left_at_once_then_one_joined_again_gets_its_messages(layer):
    """After a storm of leaves (more than one batch), a group joined again behind them is subscribed."""
    hub = await layer.new_channel()
    groups = [f"user.{n}" for n in range(450)]
    await asyncio.gather(*(layer.group_add(group, hub) for group in groups))
    # Tasks start in the order given: user.449 is joined again after all the leaves are asked,
    # and its own leave is in the last batch of them (realtime.batching.BATCH_LIMIT is 200).
    await asyncio.gather(
        *(layer.group_discard(group, hub) for group in groups), layer.group_add("user.449", hub)
    )
    for group in ("user.448", "user.449"):
        await layer.group_send(group, {"type": group})
    # Only user.449's message comes: user.448 was left, and messages on one channel keep their order.
    await layer.group_send("user.449", {"type": "last"})
    assert [await received(layer, hub), await received(layer, hub)] == ["user.449", "last"]
