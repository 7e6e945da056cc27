"""The chat HTTP API and the admin's moderation."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from chat import services
from chat.models import Message
from testsupport.asgi import receive_type


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_rooms_lists_what_the_user_may_join(alice, carol, lobby, secret_room):
    """Public rooms for everyone, private ones for their members."""
    assert client_for(alice).get("/api/chat/rooms/").json() == {
        "results": [
            {"slug": "lobby", "title": "Lobby", "private": False},
            {"slug": "secret", "title": "Secret", "private": True},
        ]
    }
    assert [r["slug"] for r in client_for(carol).get("/api/chat/rooms/").json()["results"]] == ["lobby"]


def test_anonymous_gets_401(db, lobby):
    """Without a session or token the API answers 401 JSON."""
    response = Client().get("/api/chat/rooms/lobby/messages/")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


def test_messages_pages_newest_first_with_a_before_cursor(alice, lobby):
    """Pages go newest first; next_before fetches the next page; deleted ones are left out."""
    ids = [services.post_message(room=lobby, author=alice, body=f"m{i}")[0].id for i in range(5)]
    services.delete_message(message=Message.objects.get(pk=ids[3]))
    client = client_for(alice)
    page = client.get("/api/chat/rooms/lobby/messages/?limit=2").json()
    assert [m["id"] for m in page["results"]] == [ids[4], ids[2]]
    assert page["results"][0] == {
        "id": ids[4],
        "room": "lobby",
        "author": "alice",
        "body": "m4",
        "created_at": page["results"][0]["created_at"],
        "client_id": None,
    }
    page = client.get(f"/api/chat/rooms/lobby/messages/?limit=2&before={page['next_before']}").json()
    assert [m["id"] for m in page["results"]] == [ids[1], ids[0]]
    assert page["next_before"] is None


@pytest.mark.parametrize("slug", ["nope", "x" * 101])
def test_unknown_room_is_404(carol, secret_room, slug):
    """A room that does not exist is 404 not_found."""
    response = client_for(carol).get(f"/api/chat/rooms/{slug}/messages/")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize("path", ["messages", "online"])
def test_a_private_room_of_others_is_403(carol, secret_room, path):
    """A private room the user is not a member of is 403 forbidden, as the socket's 4403."""
    response = client_for(carol).get(f"/api/chat/rooms/secret/{path}/")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


@pytest.mark.parametrize("query", ["before=abc", "before=0", "limit=-1", "limit=x"])
def test_bad_cursor_or_limit_is_400(alice, lobby, query):
    """A cursor or limit that is not a positive integer is a 400 JSON error."""
    response = client_for(alice).get(f"/api/chat/rooms/lobby/messages/?{query}")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_message"


def test_messages_api_refuses_post(alice, lobby):
    """The history endpoint is read-only."""
    response = client_for(alice).post("/api/chat/rooms/lobby/messages/", {}, content_type="application/json")
    assert response.status_code == 405


@pytest.mark.django_db(transaction=True)
async def test_admin_delete_action_goes_through_the_service(socket_for, make_user, bob, lobby):
    """The admin's bulk delete flags the messages and pushes message_deleted live."""
    admin = await sync_to_async(make_user)("root", is_staff=True, is_superuser=True)
    message, _ = await sync_to_async(services.post_message)(room=lobby, author=bob, body="spam")
    socket = await socket_for("/ws/chat/lobby/", bob)
    await receive_type(socket, "welcome")

    def run_action():
        return client_for(admin).post(
            "/admin/chat/message/",
            {"action": "delete_selected_messages", "_selected_action": [message.pk]},
        )

    response = await sync_to_async(run_action)()
    assert response.status_code == 302
    assert await receive_type(socket, "message_deleted") == {"type": "message_deleted", "id": message.id}
    await message.arefresh_from_db()
    assert message.deleted_at is not None


def test_admin_pages_render(make_user, alice, lobby, secret_room):
    """The room and message admin pages (list, change, search) render for a superuser."""
    admin = make_user("root", is_staff=True, is_superuser=True)
    message, _ = services.post_message(room=lobby, author=alice, body="findme")
    client = client_for(admin)
    for url in (
        "/admin/chat/room/",
        f"/admin/chat/room/{secret_room.pk}/change/",
        "/admin/chat/message/?q=findme",
        "/admin/chat/message/?q=alice",
        f"/admin/chat/message/{message.pk}/change/",
        f"/admin/chat/message/{message.pk}/delete/",
    ):
        assert client.get(url).status_code == 200, url
    assert b"findme" in client.get("/admin/chat/message/?q=alice").content


def test_admin_single_delete_goes_through_the_service(make_user, alice, lobby):
    """The delete button on one message flags it instead of removing the row."""
    admin = make_user("root", is_staff=True, is_superuser=True)
    message, _ = services.post_message(room=lobby, author=alice, body="bye")
    response = client_for(admin).post(f"/admin/chat/message/{message.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    message.refresh_from_db()
    assert message.deleted_at is not None
