"""LayerEcho (realtime/fanout/echo.py): the heartbeat's and /readyz's round trip, on the real Redis layer."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer
from django.conf import settings
from redis.asyncio import Redis

from realtime.fanout.echo import LayerEcho
from testsupport.asgi import WAIT

pytestmark = [pytest.mark.redis]


async def test_a_round_trip_cut_off_at_any_point_leaves_the_echo_working():
    """Cancel a round trip at every stage in turn (the heartbeat's and /readyz's timeouts do this).

    With send + receive under a timeout, a cut inside `receive` made channels_redis
    unsubscribe the channel and every later round trip time out. Here each cut
    is followed by a round trip that completes, on the same single channel.
    """
    layer = get_channel_layer()
    redis = Redis.from_url(settings.REDIS_URL)
    pattern = f"{settings.CHANNEL_LAYERS['default']['CONFIG']['prefix']}*"
    before = set(await redis.pubsub_channels(pattern))
    echo = LayerEcho(layer)
    try:
        await asyncio.wait_for(echo.round_trip(), WAIT)
        channel = echo.channel
        for steps in range(10_000):  # until a round trip is given enough steps to finish
            trip = asyncio.ensure_future(echo.round_trip())
            for _ in range(steps):
                await asyncio.sleep(0)  # one turn of the event loop: where the cut falls, not a wait
            if trip.done():
                break
            trip.cancel()
            await asyncio.gather(trip, return_exceptions=True)
            await asyncio.wait_for(echo.round_trip(), WAIT)
        else:
            raise AssertionError("a round trip never finished")
        assert steps > 1  # the cuts did fall at several stages
        assert echo.channel == channel
        assert set(await redis.pubsub_channels(pattern)) - before == {channel.encode()}
    finally:
        await echo.close()
        await redis.aclose()


async def test_round_trips_in_parallel_each_get_their_own_echo():
    echo = LayerEcho(get_channel_layer())
    try:
        await asyncio.wait_for(asyncio.gather(*(echo.round_trip() for _ in range(20))), WAIT)
        assert echo._waiting == {}
    finally:
        await echo.close()
