"""chat.services and chat.selectors: the one write path and its reads."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.db import transaction

from chat import selectors, services
from chat.models import Message, Room
from testsupport.asgi import receive_type

post = sync_to_async(services.post_message)


@pytest.mark.django_db(transaction=True)
async def test_rolled_back_post_pushes_nothing(socket_for, alice, lobby):
    """A post inside a transaction that rolls back is neither stored nor pushed."""

    def post_then_fail():
        with pytest.raises(RuntimeError), transaction.atomic():
            services.post_message(room=lobby, author=alice, body="never")
            raise RuntimeError("rollback")

    socket = await socket_for("/ws/chat/lobby/", alice)
    await receive_type(socket, "welcome")
    await sync_to_async(post_then_fail)()
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from() == {"type": "pong"}
    assert not await Message.objects.filter(body="never").aexists()


@pytest.mark.django_db(transaction=True)
async def test_rolled_back_delete_pushes_nothing(socket_for, alice, lobby):
    """A delete that rolls back leaves the message visible and tells nobody."""
    message, _ = await post(room=lobby, author=alice, body="stays")

    def delete_then_fail():
        with pytest.raises(RuntimeError), transaction.atomic():
            services.delete_message(message=message, by=alice)
            raise RuntimeError("rollback")

    socket = await socket_for("/ws/chat/lobby/", alice)
    await receive_type(socket, "welcome")
    await sync_to_async(delete_then_fail)()
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from() == {"type": "pong"}
    await message.arefresh_from_db()
    assert message.deleted_at is None


def test_post_trims_and_validates_the_body(alice, lobby, settings):
    """The body is trimmed; empty, over-long or NUL bodies are refused with a code."""
    message, created = services.post_message(room=lobby, author=alice, body="  hello \n")
    assert (message.body, created) == ("hello", True)
    settings.CHAT_MAX_BODY = 5
    with pytest.raises(ValidationError) as too_long:
        services.post_message(room=lobby, author=alice, body="123456")
    assert services.is_too_long(too_long.value)
    for body in ("", "   ", "a\x00b"):
        with pytest.raises(ValidationError) as invalid:
            services.post_message(room=lobby, author=alice, body=body)
        assert not services.is_too_long(invalid.value)
    assert Message.objects.count() == 1


def test_duplicate_client_id_returns_the_original(alice, bob, lobby):
    """Same author, room and client_id: the original, created False; other authors are separate."""
    first, created = services.post_message(room=lobby, author=alice, body="one", client_id="c")
    again, created_again = services.post_message(room=lobby, author=alice, body="two", client_id="c")
    assert (created, created_again, again.pk, again.body) == (True, False, first.pk, "one")
    _, bob_created = services.post_message(room=lobby, author=bob, body="bob", client_id="c")
    assert bob_created
    assert Message.objects.count() == 2


def test_database_enforces_one_row_per_client_id(alice, lobby):
    """The unique constraint holds even for writes that bypass the service."""
    from django.db import IntegrityError

    Message.objects.create(room=lobby, author=alice, body="a", client_id="x")
    Message.objects.create(room=lobby, author=alice, body="no client id")
    Message.objects.create(room=lobby, author=alice, body="no client id either")
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(room=lobby, author=alice, body="b", client_id="x")


def test_non_member_may_not_post_in_a_private_room(carol, secret_room):
    """post_message refuses an author who is not a member of a private room."""
    with pytest.raises(PermissionDenied):
        services.post_message(room=secret_room, author=carol, body="let me in")


def test_delete_is_a_flag_and_hides_the_message(alice, lobby):
    """A deleted message stays as a row but leaves history, pages and replays; deleting twice is a no-op."""
    keep, _ = services.post_message(room=lobby, author=alice, body="keep")
    gone, _ = services.post_message(room=lobby, author=alice, body="gone")
    assert services.delete_message(message=gone, by=alice) is True
    assert services.delete_message(message=gone, by=alice) is False
    assert Message.objects.filter(pk=gone.pk, deleted_at__isnull=False).exists()
    assert selectors.history(room=lobby, limit=10) == [keep]
    assert selectors.messages_after(room=lobby, after=0, limit=10) == [keep]
    assert selectors.history_page(room=lobby, limit=10) == ([keep], None)
    assert selectors.last_message_id(room=lobby) == gone.pk


def test_visible_rooms_are_public_ones_and_private_ones_of_the_user(alice, carol, lobby, secret_room):
    """Alice sees the lobby and her private room; Carol only the lobby."""
    assert list(selectors.visible_rooms(user=alice)) == [lobby, secret_room]
    assert list(selectors.visible_rooms(user=carol)) == [lobby]


def test_seed_demo_creates_lobby_and_a_private_room_and_is_idempotent(db, capsys):
    """seed_demo makes the public lobby and a private room for alice and bob, twice without harm."""
    call_command("seed_demo")
    call_command("seed_demo")
    lobby = Room.objects.get(slug="lobby")
    pair = Room.objects.get(slug="alice-bob")
    assert not lobby.private
    assert pair.private
    assert sorted(pair.members.values_list("username", flat=True)) == ["alice", "bob"]
    assert Room.objects.count() == 2
    assert "/chat/lobby/" in capsys.readouterr().out
