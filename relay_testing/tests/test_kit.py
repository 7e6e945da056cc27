"""The test kit (relay_testing) as a project's tests use it, and the README example that shows it."""

from __future__ import annotations

import asyncio
import re

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from chat.models import Room
from chat.services import post_message
from notifications.models import Notification
from notifications.services import notify
from realtime.fanout.push import BATCH_MIN_GROUPS
from realtime.protocol import Event, user_group

EXAMPLE = settings.BASE_DIR / "docs" / "examples" / "test_example.py"


def make_users(count: int, prefix: str = "user") -> list:
    return [get_user_model().objects.create_user(f"{prefix}{n}") for n in range(count)]


def test_the_readme_example_is_the_example_file_that_runs():
    """README's "Testing your code" example is docs/examples/test_example.py, character for character."""
    readme = (settings.BASE_DIR / "README.md").read_text()
    section = readme.split("## Testing your code", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert EXAMPLE.read_text() in blocks
    assert "docs/examples" in settings.BASE_DIR.joinpath("pyproject.toml").read_text()


def test_notify_to_one_user_is_captured_with_its_group_and_event(relay_pushes):
    """A notify() is recorded after commit as the user's group and the event their sockets get."""
    [alice] = make_users(1)
    [row] = notify(users=alice, title="Hi", body="there")
    assert relay_pushes.all == [(user_group(alice.pk), relay_pushes.to_user(alice)[0])]
    [event] = relay_pushes.to_user(alice)
    assert event["type"] == Event.NOTIFICATION
    assert event["notification"]["id"] == row.id
    assert event["notification"]["title"] == "Hi"
    assert "committed_at" not in event


def test_a_broadcast_is_captured_per_recipient(relay_pushes):
    """A notify() to many users (one batch message per worker) is recorded as each user's own event."""
    users = make_users(BATCH_MIN_GROUPS + 3)
    notify(users=users, title="everyone")
    rows = {row.recipient_id: row.id for row in Notification.objects.filter(title="everyone")}
    assert len(relay_pushes.all) == len(users)
    for user in users:
        [event] = relay_pushes.to_user(user)
        assert event["notification"]["id"] == rows[user.pk]
        assert event["notification"]["title"] == "everyone"


def test_a_chat_message_is_captured_for_its_room(relay_pushes):
    """post_message() is recorded as the room's event with the stored message."""
    [alice] = make_users(1)
    room = Room.objects.create(slug="kit-room", title="Kit")
    message, _ = post_message(room=room, author=alice, body="hello")
    [event] = relay_pushes.to_room(room)
    assert event["type"] == Event.MESSAGE
    assert event["message"]["id"] == message.id
    assert event["message"]["body"] == "hello"


def test_a_rolled_back_write_pushes_nothing(relay_pushes):
    """What a rolled-back transaction wrote is never recorded, as it is never sent."""
    [alice] = make_users(1)

    class Undo(Exception):
        pass

    with pytest.raises(Undo), transaction.atomic():
        notify(users=alice, title="never")
        raise Undo
    assert relay_pushes.all == []


@pytest.fixture
def kit_user(db):
    """Made the way a project's fixtures make users: in the test's thread, with plain `db`."""
    return get_user_model().objects.create_user("kit-user")


@pytest.mark.django_db  # not transaction=True: the kit's fixtures see to it
async def test_a_plain_django_db_test_gets_the_push_on_its_socket(relay_socket, relay_pushes, kit_user):
    """With a plain django_db mark and a user from a `db` fixture, notify() reaches socket and recorder."""
    socket = await relay_socket("/ws/notifications/", kit_user)
    assert socket.welcome == {
        "type": "welcome",
        "user": {"id": kit_user.pk, "username": kit_user.username},
        "unread": 0,
        "last_id": None,
    }
    [row] = await sync_to_async(notify)(users=kit_user, title="live")
    frame = await socket.receive("notification")
    assert frame["notification"]["id"] == row.id
    [push] = await relay_pushes.wait(group=user_group(kit_user.pk))
    assert push.event["notification"]["id"] == row.id


async def test_a_socket_on_a_chat_room_has_read_its_welcome(relay_socket):
    """A chat socket opens with the room's welcome read, and gets the room's messages."""
    [alice] = await sync_to_async(make_users)(1)
    room = await Room.objects.acreate(slug="kit-chat", title="Kit")
    await sync_to_async(post_message)(room=room, author=alice, body="before")
    socket = await relay_socket(f"/ws/chat/{room.slug}/", alice)
    assert [m["body"] for m in socket.welcome["messages"]] == ["before"]
    await socket.send({"type": "message", "body": "after", "client_id": "kit-1"})
    frame = await socket.receive("message")
    assert frame["message"]["body"] == "after"


async def test_the_live_server_shares_the_test_database(relay_server):
    """The server answers with this test's data: a user made here gets a token and a socket there."""
    from websockets.asyncio.client import connect

    await sync_to_async(get_user_model().objects.create_user)("kit", password="a long test password")
    headers = await relay_server.auth_headers("kit", "a long test password")
    async with connect(relay_server.ws_url("/ws/notifications/"), additional_headers=headers) as socket:
        assert '"welcome"' in await asyncio.wait_for(socket.recv(), 10)


@pytest.mark.redis
async def test_a_push_from_the_test_reaches_the_live_server(relay_server):
    """With Redis, a notify() in the test process reaches a socket on the server."""
    import json

    from websockets.asyncio.client import connect

    user = await sync_to_async(get_user_model().objects.create_user)("kit", password="a long test password")
    headers = await relay_server.auth_headers("kit", "a long test password")
    async with connect(relay_server.ws_url("/ws/notifications/"), additional_headers=headers) as socket:
        assert json.loads(await asyncio.wait_for(socket.recv(), 10))["type"] == "welcome"
        [row] = await sync_to_async(notify)(users=user, title="across")
        frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
    assert frame["type"] == "notification"
    assert frame["notification"]["id"] == row.id
