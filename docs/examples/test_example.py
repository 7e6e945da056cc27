"""Tests of a project's own code with Relay's test kit (conftest.py: `pytest_plugins = ["relay_testing"]`)."""

import json

from asgiref.sync import sync_to_async
from websockets.asyncio.client import connect

from chat.models import Room
from chat.services import post_message
from notifications.services import notify


def finish_build(*, author, number: int) -> None:
    """Stands for your code: it tells the author, and the team's room, that a build finished."""
    notify(users=author, title=f"Build {number} finished", level="success", url=f"/builds/{number}/")
    post_message(room=Room.objects.get(slug="builds"), author=None, body=f"Build {number} is green")


def test_a_finished_build_notifies_its_author_and_the_room(relay_pushes, django_user_model):
    """What the code pushes, captured without a server."""
    author = django_user_model.objects.create_user("author")
    room = Room.objects.create(slug="builds", title="Builds")
    finish_build(author=author, number=42)
    [pushed] = relay_pushes.to_user(author)
    assert pushed["notification"]["title"] == "Build 42 finished"
    [posted] = relay_pushes.to_room(room)
    assert posted["message"]["body"] == "Build 42 is green"


async def test_the_author_sees_it_live(relay_socket, django_user_model):
    """A socket through the real ASGI app, logged in, its welcome read."""
    author = await django_user_model.objects.acreate_user("author")
    await Room.objects.acreate(slug="builds", title="Builds")
    socket = await relay_socket("/ws/notifications/", author)
    assert socket.welcome["unread"] == 0
    await sync_to_async(finish_build)(author=author, number=42)
    frame = await socket.receive("notification")
    assert frame["notification"]["url"] == "/builds/42/"


async def test_a_real_server_answers(relay_server, django_user_model):
    """A worker in a subprocess, on this test's database: a script's socket gets its welcome."""
    await django_user_model.objects.acreate_user("author", password="a long test password")
    headers = await relay_server.auth_headers("author", "a long test password")
    async with connect(relay_server.ws_url("/ws/notifications/"), additional_headers=headers) as socket:
        welcome = json.loads(await socket.recv())
    assert welcome["user"]["username"] == "author"
