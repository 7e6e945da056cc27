"""A notification to many users: batches through every worker's hub, end to end.

Sockets connect through the full ASGI app in this process (one worker) and
to daphne in a subprocess (a second worker, its own hub) sharing the test
database and channel layer; the notifications are sent from this process.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db import connections, transaction

from notifications import services
from notifications.serializers import notification_dict
from realtime.fanout import push
from realtime.protocol import broadcast_group, user_group
from testsupport.asgi import WAIT, receive_type
from testsupport.servers import browser_socket

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PATH = "/ws/notifications/"

notify = sync_to_async(services.notify)


def make_readers(count: int) -> list:
    # No password: sockets log in with a session made by force_login.
    User = get_user_model()
    return User.objects.bulk_create([User(username=f"reader{i:02d}") for i in range(count)])


def notify_without_push(user):
    """A notification stored for `user` whose push is lost, as if Redis dropped it."""
    with transaction.atomic():
        row = services.notify(users=user, title="lost")[0]
        transaction.get_connection().run_on_commit.clear()
    return row


@pytest.fixture(autouse=True)
async def _close_test_thread_connections():
    yield
    # The test's own sync_to_async calls share one thread whose connection no
    # request cycle closes; close it so the test database can be dropped.
    await sync_to_async(connections.close_all)()


@pytest.fixture
def layer_sends():
    """The group of every `group_send` this process makes; the messages are still sent."""
    layer = get_channel_layer()
    real = layer.group_send
    groups: list[str] = []

    async def counting(group, message):
        groups.append(group)
        await real(group, message)

    layer.group_send = counting
    yield groups
    del layer.group_send  # the layer's own again


class Here:
    """A socket on this process's worker."""

    def __init__(self, communicator) -> None:
        self.communicator = communicator

    async def receive(self) -> dict:
        return await self.communicator.receive_json_from(timeout=WAIT)

    async def send(self, frame: dict) -> None:
        await self.communicator.send_json_to(frame)


class There:
    """A socket on the daphne subprocess."""

    def __init__(self, ws) -> None:
        self.ws = ws

    async def receive(self) -> dict:
        return json.loads(await asyncio.wait_for(self.ws.recv(), WAIT))

    async def send(self, frame: dict) -> None:
        await self.ws.send(json.dumps(frame))


async def notifications_then_pong(socket, count: int) -> list[dict]:
    """The next `count` notification frames, then proof (a ping's pong) that nothing else came."""
    frames = [await socket.receive() for _ in range(count)]
    assert [frame["type"] for frame in frames] == ["notification"] * count, frames
    await socket.send({"type": "ping"})
    assert await socket.receive() == {"type": "pong"}
    return [frame["notification"] for frame in frames]


async def test_notify_everyone_reaches_each_socket_on_two_workers_once(
    socket_for, live_server_asgi, layer_sends, alice, bob, carol, monkeypatch
):
    """Every connected socket, on either worker, gets its own notification once, chained to its inbox."""
    monkeypatch.setattr(push, "BATCH_SIZE", 8)
    readers = await sync_to_async(make_readers)(21)  # 24 active users with alice, bob and carol
    # Delivered before the broadcast: its previous id is what this socket last saw.
    await notify(users=readers[8], title="earlier")
    there_url = f"ws://127.0.0.1:{live_server_asgi.port}{PATH}"
    opened_there = []

    async def here(user) -> Here:
        socket = Here(await socket_for(PATH, user))
        assert (await socket.receive())["type"] == "welcome"
        return socket

    async def there(user) -> There:
        ws = await browser_socket(there_url, user)
        opened_there.append(ws)
        socket = There(ws)
        assert (await socket.receive())["type"] == "welcome"
        return socket

    try:
        # Alice: two sockets here, one there. Bob: one here. readers 0-7 here, 8-15 there,
        # 16-20 and carol not connected.
        sockets = [(alice, await here(alice)), (alice, await here(alice)), (alice, await there(alice))]
        sockets.append((bob, await here(bob)))
        sockets += [(user, await here(user)) for user in readers[:8]]
        sockets += [(user, await there(user)) for user in readers[8:16]]
        # Bob's socket has not seen this one: the broadcast's previous id for his inbox must say so.
        lost = await sync_to_async(notify_without_push)(bob)
        layer_sends.clear()

        created = await notify(everyone=True, title="Maintenance", body="at 22:00", level="warning")

        assert len(created) == 24
        # One channel-layer message per batch of 8 recipients, whatever the number of workers.
        assert layer_sends == [broadcast_group()] * 3
        mine = {row.recipient_id: row for row in created}
        received = await asyncio.gather(
            *(notifications_then_pong(socket, 2 if user == bob else 1) for user, socket in sockets)
        )
        for (user, _), got in zip(sockets, received, strict=True):
            expected = [notification_dict(mine[user.pk])]
            if user == bob:
                expected.insert(0, notification_dict(lost))  # read from the database, before his broadcast
            assert got == expected, user.username
    finally:
        for ws in opened_there:
            await ws.close()

    # Those not connected find theirs on resume, once.
    for user in (carol, readers[20]):
        socket = await socket_for(PATH, user)
        assert (await receive_type(socket, "welcome"))["last_id"] == mine[user.pk].id
        await socket.send_json_to({"type": "resume", "after": 0})
        assert (await receive_type(socket, "notification"))["notification"]["id"] == mine[user.pk].id
        assert (await receive_type(socket, "replay_done"))["more"] is False


async def test_one_channel_layer_message_per_batch_not_per_user(socket_for, layer_sends, alice, monkeypatch):
    """A big send is one group_send per batch to every hub; a small one stays one per user."""
    readers = await sync_to_async(make_readers)(40)
    socket = await socket_for(PATH, alice)
    await receive_type(socket, "welcome")

    first = await notify(everyone=True, title="all 41, one batch")
    monkeypatch.setattr(push, "BATCH_SIZE", 16)
    second = await notify(everyone=True, title="all 41, three batches")
    third = await notify(users=[alice, readers[0]], title="two")

    assert layer_sends[:4] == [broadcast_group()] * 4
    assert sorted(layer_sends[4:]) == sorted(user_group(row.recipient_id) for row in third)
    alices = [row.id for rows in (first, second, third) for row in rows if row.recipient_id == alice.pk]
    assert [(await receive_type(socket, "notification"))["notification"]["id"] for _ in alices] == alices
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from(timeout=WAIT) == {"type": "pong"}


async def test_a_rolled_back_big_send_pushes_nothing(socket_for, layer_sends, alice):
    """The batches, like single pushes, go out only after commit."""
    await sync_to_async(make_readers)(30)
    socket = await socket_for(PATH, alice)
    await receive_type(socket, "welcome")

    def notify_then_fail():
        with pytest.raises(RuntimeError), transaction.atomic():
            services.notify(everyone=True, title="never")
            raise RuntimeError("rollback")

    await sync_to_async(notify_then_fail)()
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from(timeout=WAIT) == {"type": "pong"}
    assert layer_sends == []
