"""Losing access to a private room (issue 14 item 1): sockets close 4403, reads are refused.

In-process, through the full ASGI application. The same across two worker
processes: test_access_workers.py.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from chat import services
from chat.models import Room
from realtime.protocol import Event
from testsupport.asgi import closed_with, http, receive_type
from testsupport.auth import session_headers

pytestmark = pytest.mark.django_db(transaction=True)

post = sync_to_async(services.post_message)


@pytest.fixture
def trio(alice, bob, carol):
    """A private room of alice, bob and carol."""
    return services.create_room(slug="trio", title="Trio", private=True, members=[alice, bob, carol])


async def enter(socket_for, user, slug="trio"):
    socket = await socket_for(f"/ws/chat/{slug}/", user)
    await receive_type(socket, "welcome")
    return socket


async def frames_until_close(socket) -> tuple[list[dict], tuple[int, str | None]]:
    """Every frame the socket gets until the server closes it, and the close's (code, reason)."""
    import orjson

    frames = []
    while True:
        output = await socket.receive_output(timeout=10)
        if output["type"] == "websocket.close":
            return frames, (output.get("code"), output.get("reason"))
        frames.append(orjson.loads(output["text"]))


@pytest.fixture
def revokes_lost(monkeypatch):
    """Drop every `revoke` push, as if it were late: what holds then is the socket's own checks."""
    real = services.push_after_commit

    def without_revokes(messages, **kwargs):
        real([(g, e) for g, e in messages if e["type"] != Event.REVOKE], **kwargs)

    monkeypatch.setattr(services, "push_after_commit", without_revokes)


def _admin_inline_delete(room: Room, user, admin) -> None:
    """Tick "delete" on the user's row of the admin's members inline and save the room."""
    client = Client()
    client.force_login(admin)
    url = f"/admin/chat/room/{room.pk}/change/"
    response = client.get(url)
    formset = response.context["inline_admin_formsets"][0].formset
    data = {
        "slug": room.slug,
        "title": room.title,
        "private": "on",
        **{f"{formset.prefix}-{k}": v for k, v in formset.management_form.initial.items()},
    }
    for index, form in enumerate(formset.initial_forms):
        data[f"{formset.prefix}-{index}-id"] = form.instance.pk
        data[f"{formset.prefix}-{index}-room"] = room.pk
        data[f"{formset.prefix}-{index}-user"] = form.instance.user_id
        if form.instance.user_id == user.pk:
            data[f"{formset.prefix}-{index}-DELETE"] = "on"
    response = client.post(url, data)
    assert response.status_code == 302, response.context and response.context["errors"]


REMOVALS = {
    "service": lambda room, user, admin: services.remove_members(room=room, users=[user]),
    "remove": lambda room, user, admin: room.members.remove(user),
    "set": lambda room, user, admin: room.members.set(room.members.exclude(pk=user.pk)),
    "reverse": lambda room, user, admin: user.chat_rooms.remove(room),
    "admin inline": _admin_inline_delete,
}


@pytest.mark.parametrize("how", REMOVALS)
async def test_a_removed_member_is_closed_4403_and_the_others_stay(
    socket_for, alice, bob, carol, trio, make_user, how
):
    """Removing carol, however it is done, closes her room socket with 4403; alice and bob stay."""
    admin = await sync_to_async(make_user)("root", is_staff=True, is_superuser=True)
    alices, bobs, carols = [await enter(socket_for, user) for user in (alice, bob, carol)]
    await sync_to_async(REMOVALS[how])(trio, carol, admin)
    frames, close = await frames_until_close(carols)
    assert close == (4403, "forbidden")
    assert not [f for f in frames if f["type"] == "message"]
    await alices.send_json_to({"type": "message", "body": "after", "client_id": "a-1"})
    for socket in (alices, bobs):
        assert (await receive_type(socket, "message"))["message"]["body"] == "after"


async def test_clear_closes_every_member(socket_for, alice, bob, trio):
    """`room.members.clear()` closes every member's socket in the room."""
    sockets = [await enter(socket_for, user) for user in (alice, bob)]
    await sync_to_async(trio.members.clear)()
    for socket in sockets:
        assert (await closed_with(socket))[0] == 4403


async def test_a_message_after_the_removal_never_reaches_the_member_even_before_the_close(
    socket_for, alice, carol, trio, revokes_lost
):
    """With the revoke late, alice's next post is not shown to carol: her socket checks and closes."""
    alices, carols = await enter(socket_for, alice), await enter(socket_for, carol)
    await sync_to_async(trio.members.remove)(carol)
    await post(room=trio, author=alice, body="not for carol", client_id="a-1")
    assert (await receive_type(alices, "message"))["message"]["body"] == "not for carol"
    frames, close = await frames_until_close(carols)
    assert close == (4403, "forbidden")
    assert not [f for f in frames if f["type"] == "message"], frames


async def test_resume_after_the_removal_is_refused(socket_for, alice, carol, trio, revokes_lost):
    """Carol's `resume after=0` once removed: error forbidden, then 4403; no history."""
    await post(room=trio, author=alice, body="history", client_id="a-1")
    carols = await enter(socket_for, carol)
    await sync_to_async(trio.members.remove)(carol)
    await carols.send_json_to({"type": "resume", "after": 0, "ref": "r1"})
    frames, close = await frames_until_close(carols)
    assert [f for f in frames if f["type"] != "presence"] == [
        {
            "type": "error",
            "code": "forbidden",
            "detail": "you are no longer a member of this room",
            "ref": "r1",
        }
    ]
    assert close == (4403, "forbidden")


async def test_http_history_is_refused_after_the_removal(alice, carol, trio):
    """GET messages and online of the room answer carol 403 forbidden once she is removed."""
    await post(room=trio, author=alice, body="history", client_id="a-1")
    headers = await sync_to_async(session_headers)(carol, csrf=False)
    status, _, _ = await http("GET", "/api/chat/rooms/trio/messages/", headers=headers)
    assert status == 200
    await sync_to_async(trio.members.remove)(carol)
    for path in ("messages", "online"):
        status, body, _ = await http("GET", f"/api/chat/rooms/trio/{path}/", headers=headers)
        assert (status, body["error"]) == (403, "forbidden")


async def test_making_a_public_room_private_closes_the_non_members(socket_for, alice, carol, lobby):
    """Saving the lobby private with alice as its only member closes carol's socket there, not alice's."""
    alices, carols = await enter(socket_for, alice, "lobby"), await enter(socket_for, carol, "lobby")

    def make_private():
        lobby.members.add(alice)
        lobby.private = True
        lobby.save()

    await sync_to_async(make_private)()
    assert await closed_with(carols) == (4403, "forbidden")
    await alices.send_json_to({"type": "message", "body": "members only", "client_id": "a-1"})
    assert (await receive_type(alices, "message"))["message"]["body"] == "members only"


async def test_removing_someone_else_or_from_a_public_room_closes_nothing(
    socket_for, alice, bob, carol, trio, lobby
):
    """Bob's removal leaves carol's trio socket open and delivering; a public room's removal does nothing."""
    carols = await enter(socket_for, carol)
    lobbys = await enter(socket_for, carol, "lobby")
    await sync_to_async(lobby.members.add)(carol)
    await sync_to_async(lobby.members.remove)(carol)
    await sync_to_async(trio.members.remove)(bob)
    await post(room=trio, author=alice, body="still here", client_id="a-1")
    assert (await receive_type(carols, "message"))["message"]["body"] == "still here"
    await lobbys.send_json_to({"type": "ping"})
    assert await receive_type(lobbys, "pong") == {"type": "pong"}


async def test_a_member_removed_and_added_again_keeps_a_new_socket(socket_for, alice, carol, trio):
    """After removal and re-adding, carol's new socket is admitted and gets messages."""
    first = await enter(socket_for, carol)
    await sync_to_async(trio.members.remove)(carol)
    assert (await closed_with(first))[0] == 4403
    await sync_to_async(trio.members.add)(carol)
    second = await enter(socket_for, carol)
    await post(room=trio, author=alice, body="welcome back", client_id="a-1")
    assert (await receive_type(second, "message"))["message"]["body"] == "welcome back"
