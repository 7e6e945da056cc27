"""The per-worker hub: one channel-layer membership per group per process."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from notifications import services
from realtime.adapter import group_redis_name
from realtime.protocol import broadcast_group, user_group
from testsupport.asgi import receive_type

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def pubsub() -> bool:
    from channels_redis.pubsub import RedisPubSubChannelLayer

    return isinstance(get_channel_layer(), RedisPubSubChannelLayer)  # ours is a subclass


def redis_client():
    import redis.asyncio

    return redis.asyncio.Redis.from_url(settings.REDIS_URL)


async def group_size(group: str) -> int:
    """How many members Redis holds for the group: sorted-set entries, or pub/sub subscribers."""
    layer = get_channel_layer()
    if pubsub():
        client = redis_client()
        try:
            [(_, count)] = await client.pubsub_numsub(group_redis_name(layer, group))
            return count
        finally:
            await client.aclose()
    connection = layer.connection(layer.consistent_hash(group))
    return await connection.zcard(group_redis_name(layer, group))


async def layer_connections(client) -> set[int]:
    """Ids of the Redis connections of this run's channel layer (named in conftest.py)."""
    (host,) = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
    return {int(c["id"]) for c in await client.client_list() if c["name"] == host["client_name"]}


async def forget_groups(group: str) -> None:
    """What a Redis restart does to group membership, done to this run's connections only.

    The Redis is shared (other runs, someone's `make run`): killing every
    pub/sub client would cut their sockets too.
    """
    layer = get_channel_layer()
    if pubsub():
        client = redis_client()
        try:
            for connection in await layer_connections(client):
                await client.client_kill_filter(_id=connection)
        finally:
            await client.aclose()
        return
    connection = layer.connection(layer.consistent_hash(group))
    await connection.delete(group_redis_name(layer, group))


async def test_many_sockets_of_one_user_are_one_group_member(socket_for, alice):
    """Three sockets in one process add one member to the Redis group, and all get the push."""
    sockets = [await socket_for("/ws/notifications/", alice) for _ in range(3)]
    for socket in sockets:
        await receive_type(socket, "welcome")
    assert await group_size(user_group(alice.id)) == 1
    sent = await sync_to_async(services.notify)(users=alice, title="once per worker")
    for socket in sockets:
        assert (await receive_type(socket, "notification"))["notification"]["id"] == sent[0].id
    for socket in sockets:
        await socket.disconnect()
    assert await group_size(user_group(alice.id)) == 0


async def test_group_membership_lost_from_redis_is_rebuilt(socket_for, alice, settings):
    """If Redis forgets the group (a restart), the hub re-adds it and pushes flow again."""
    settings.HUB_REFRESH_SECONDS = 0.1
    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    await forget_and_wait_for_rejoin(user_group(alice.id), socket)
    sent = await sync_to_async(services.notify)(users=alice, title="after the loss")
    assert (await receive_type(socket, "notification"))["notification"]["id"] == sent[0].id


async def test_broadcast_membership_lost_from_redis_is_rebuilt(socket_for, alice, settings):
    """The hub's place in the broadcast group heals like its other groups, and big sends flow again."""
    from django.contrib.auth import get_user_model

    from realtime.fanout import push

    User = get_user_model()
    await User.objects.abulk_create([User(username=f"reader{i}") for i in range(push.BATCH_MIN_GROUPS)])
    settings.HUB_REFRESH_SECONDS = 0.1
    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    assert await group_size(broadcast_group()) == 1
    await forget_and_wait_for_rejoin(broadcast_group(), socket)
    sent = await sync_to_async(services.notify)(everyone=True, title="after the loss")
    assert len(sent) > push.BATCH_MIN_GROUPS  # so it went as a batch
    alices = next(row.id for row in sent if row.recipient_id == alice.id)
    assert (await receive_type(socket, "notification"))["notification"]["id"] == alices


async def test_a_malformed_batch_entry_is_skipped_and_the_hub_goes_on(socket_for, alice):
    """A batch entry the hub cannot read is skipped; the rest of the batch and later events arrive."""
    from django.db import transaction

    from notifications.serializers import notification_dict
    from realtime.fanout.hub import batch_envelope
    from realtime.protocol import Event

    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")

    def notify_without_push():
        with transaction.atomic():
            row = services.notify(users=alice, title="by hand")[0]
            transaction.get_connection().run_on_commit.clear()
        return row

    row = await sync_to_async(notify_without_push)()
    event = {"type": Event.NOTIFICATION, "notification": notification_dict(row), "prev_id": None}
    mine = user_group(alice.id)
    broken = [["one item"], [[1], {}], [mine, None], [mine, {}]]
    await get_channel_layer().group_send(broadcast_group(), batch_envelope(event, broken))
    assert (await receive_type(socket, "notification"))["notification"]["id"] == row.id
    later = await sync_to_async(services.notify)(users=alice, title="later")
    assert (await receive_type(socket, "notification"))["notification"]["id"] == later[0].id


async def test_forgetting_groups_cuts_this_runs_connections_and_no_one_elses(socket_for, alice):
    """The tests' stand-in for a Redis restart leaves a neighbour's subscription on the same Redis alone."""
    import uuid

    if not pubsub():
        pytest.skip("the core layer's groups are keys of this run's prefix, deleted by name")
    socket = await socket_for("/ws/notifications/", alice)
    await receive_type(socket, "welcome")
    neighbour = redis_client()
    channel = f"neighbour-{uuid.uuid4().hex}"
    subscription = neighbour.pubsub()
    try:
        await subscription.subscribe(channel)
        ours = await layer_connections(neighbour)
        assert ours, "this run's layer has no named connection"
        await forget_groups(user_group(alice.id))
        assert not ours & await layer_connections(neighbour), "this run's connections survived"
        assert await neighbour.pubsub_numsub(channel) == [(channel.encode(), 1)]
    finally:
        await subscription.aclose()
        await neighbour.aclose()


async def forget_and_wait_for_rejoin(group: str, socket) -> None:
    """Make Redis forget the group, then wait until this worker's hub is back in it."""
    await forget_groups(group)
    # The next refresh restores it; wait for that by polling Redis itself.
    for _ in range(200):
        if await group_size(group) == 1:
            break
        await receive_nothing(socket)
    assert await group_size(group) == 1


async def receive_nothing(socket) -> None:
    assert await socket.receive_nothing(timeout=0.05)


async def test_sockets_that_connect_together_to_a_fresh_worker_all_get_their_welcome(socket_for, make_user):
    """The first sockets of a worker race to set up its hub; every one of them is welcomed."""
    import asyncio

    from realtime.fanout.hub import close_hub

    users = [await sync_to_async(make_user)(f"racer{i}") for i in range(8)]
    closing = close_hub()  # a fresh hub, as in a worker that just started
    if closing is not None:
        await closing
    sockets = await asyncio.gather(*(socket_for("/ws/notifications/", user) for user in users))
    welcomes = await asyncio.gather(*(receive_type(socket, "welcome") for socket in sockets))
    assert sorted(w["user"]["username"] for w in welcomes) == sorted(u.username for u in users)
    from django.db import connections

    await sync_to_async(connections.close_all)()  # the test's own thread, so the database can go


class Recorder:
    """A socket as the hub sees it, recording what it is handed and whether it was corked then.

    Events marked `slow` take the async path (the hub must uncork before it awaits them).
    """

    def __init__(self) -> None:
        self.log: list = []
        self.corked = False

    def hub_cork(self) -> None:
        self.corked = True
        self.log.append("cork")

    def hub_uncork(self) -> None:
        self.corked = False
        self.log.append("uncork")

    def hub_lost(self) -> None:
        pass

    def hub_deliver(self, event):
        if not event.get("slow"):
            self.log.append(("quick", event["n"], self.corked))
            return None

        async def slow():
            self.log.append(("slow", event["n"], self.corked))

        return slow()


async def test_a_backlog_reaches_each_socket_in_arrival_order_one_write_per_run():
    """A run of one group's events is corked into one write per socket, uncorked before any slow delivery."""
    from realtime.fanout.hub import Hub, envelope

    hub = Hub()
    alice, bob = Recorder(), Recorder()
    hub.members = {"room.1": {alice}, "user.1": {alice, bob}}
    backlog = [
        envelope("room.1", {"n": 1}),
        envelope("room.1", {"n": 2, "slow": True}),
        envelope("room.1", {"n": 3}),
        envelope("user.1", {"n": 4}),
        envelope("room.1", {"n": 5}),
    ]
    await hub._dispatch_round(backlog)
    assert alice.log == [
        "cork",
        ("quick", 1, True),
        "uncork",
        ("slow", 2, False),
        "cork",
        ("quick", 3, True),
        "uncork",
        ("quick", 4, False),
        ("quick", 5, False),
    ]
    assert bob.log == [("quick", 4, False)]
