"""The welcome's hand-written query gives the same answer as the ORM's reads."""

from __future__ import annotations

import pytest

from chat import selectors, services
from chat.models import Message
from chat.serializers import message_dict

pytestmark = pytest.mark.django_db


def orm_state(room, history: int) -> tuple[list[dict], int | None]:
    rows = selectors.history(room=room, limit=history)
    return [message_dict(m, room_slug=room.slug) for m in rows], selectors.last_message_id(room=room)


def state(room, history: int) -> tuple[list[dict], int | None]:
    answer = selectors.room_state(room=room, history=history)
    return answer.messages, answer.last_id


def test_room_state_matches_the_orm_with_authors_system_messages_and_deletions(lobby, alice, bob):
    """Authors, system messages (no author), client ids and deleted messages read as the ORM reads them."""
    services.post_message(room=lobby, author=alice, body="one", client_id="c1")
    services.post_message(room=lobby, author=None, body="system")
    doomed, _ = services.post_message(room=lobby, author=bob, body="deleted")
    services.post_message(room=lobby, author=bob, body="two")
    services.delete_message(message=doomed)
    assert state(lobby, 50) == orm_state(lobby, 50)
    assert state(lobby, 2) == orm_state(lobby, 2)
    assert [m["body"] for m in state(lobby, 50)[0]] == ["one", "system", "two"]


def test_room_state_counts_a_deleted_newest_message_and_empty_rooms(lobby, other_room, alice):
    """The newest id includes deleted messages; a room with none live, or none at all, still answers."""
    assert state(other_room, 50) == ([], None)
    message, _ = services.post_message(room=lobby, author=alice, body="only")
    services.delete_message(message=message)
    assert state(lobby, 50) == ([], message.id) == orm_state(lobby, 50)
    later, _ = services.post_message(room=lobby, author=alice, body="later")
    services.delete_message(message=later)
    services.post_message(room=lobby, author=alice, body="kept")
    assert state(lobby, 50) == orm_state(lobby, 50)
    assert state(lobby, 0) == ([], selectors.last_message_id(room=lobby))


def test_joinable_rooms_read_together_answer_as_each_room_alone(lobby, secret_room, alice, carol):
    """Public, private (member and not), unknown and malformed slugs, an inactive user: as joinable_room."""
    wanted = [
        (lobby.slug, carol),
        (secret_room.slug, alice),
        (secret_room.slug, carol),
        ("no-such-room", alice),
        ("bad slug!", alice),
        (lobby.slug, alice),
    ]
    together = selectors.joinable_rooms(wanted)
    alone = [selectors.joinable_room(slug=slug, user=user) for slug, user in wanted]
    assert [(room and room.pk, allowed) for room, allowed in together] == [
        (room and room.pk, allowed) for room, allowed in alone
    ]
    assert [allowed for _, allowed in together] == [True, True, False, False, False, True]
    assert together[0][0] is not together[5][0]
    carol.is_active = False
    assert selectors.joinable_rooms([(lobby.slug, carol)]) == [(lobby, False)]


def test_room_states_read_once_per_room_answer_as_each_alone(lobby, other_room, alice):
    """Several sockets of two rooms: each gets its room's state, the same as room_state reads it."""
    services.post_message(room=lobby, author=alice, body="hello")
    wanted = [(lobby, 50), (other_room, 50), (lobby, 50), (lobby, 1)]
    together = selectors.room_states(wanted)
    assert together == [selectors.room_state(room=room, history=history) for room, history in wanted]


def test_readable_messages_read_together_answer_as_each_alone(lobby, secret_room, alice, carol):
    """Windows shared and not, skip and up_to, a private room (member and not), an inactive user."""
    ids = [services.post_message(room=lobby, author=alice, body=f"m{n}")[0].id for n in range(6)]
    services.post_message(room=secret_room, author=alice, body="secret")
    services.delete_message(message=Message.objects.get(pk=ids[2]))
    windows = [
        {"after": ids[0], "limit": 3},
        {"after": 0, "limit": 10, "skip": (ids[1], ids[3])},
        {"after": ids[0], "limit": 10, "up_to": ids[4]},
    ]
    wanted = [(lobby, carol, w) for w in windows] + [
        (lobby, alice, windows[0]),
        (secret_room, alice, {"after": 0, "limit": 10}),
        (secret_room, carol, {"after": 0, "limit": 10}),
    ]
    together = selectors.readable_messages_many(wanted)
    alone = [selectors.readable_messages_after(room=room, user=user, **w) for room, user, w in wanted]
    assert together == alone
    assert together[5] is None and all(rows for rows in together[:5])
    carol.is_active = False
    assert selectors.readable_messages_many([(lobby, carol, windows[0])]) == [None]
