"""The /ws/chat/<slug>/ socket, through the full ASGI application: chatting, history, replay, presence.

What the socket refuses (rooms, the rate limit, bad frames) is `test_socket_refusals.py`.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chat import services
from chat.models import Message
from testsupport.asgi import assert_quiet, enter_room, receive_type

pytestmark = pytest.mark.django_db(transaction=True)

post = sync_to_async(services.post_message)
count_messages = sync_to_async(lambda **kw: Message.objects.filter(**kw).count())


def presence_frame(*, joined=(), left=(), count: int) -> dict:
    return {"type": "presence", "joined": list(joined), "left": list(left), "online_count": count}


async def test_two_users_chat_and_another_room_hears_nothing(
    socket_for, alice, bob, carol, lobby, other_room
):
    """A message reaches every socket in the room, the sender's included, and no other room."""
    alices, _ = await enter_room(socket_for, alice)
    bobs, _ = await enter_room(socket_for, bob)
    carols, _ = await enter_room(socket_for, carol, "other")
    await alices.send_json_to({"type": "message", "body": "  hi bob  ", "client_id": "a-1"})
    frames = [await receive_type(s, "message") for s in (alices, bobs)]
    assert frames[0] == frames[1]
    message = frames[0]["message"]
    assert message == {
        "id": message["id"],
        "room": "lobby",
        "author": "alice",
        "body": "hi bob",
        "created_at": message["created_at"],
        "client_id": "a-1",
    }
    assert message["created_at"].endswith("Z")
    await bobs.send_json_to({"type": "message", "body": "hi alice", "client_id": "b-1"})
    for socket in (alices, bobs):
        assert (await receive_type(socket, "message"))["message"]["author"] == "bob"
    await assert_quiet(carols)


async def test_welcome_carries_user_room_history_and_online(socket_for, alice, lobby):
    """Welcome names the user and room, the online list, and the newest id."""
    sent, _ = await post(room=lobby, author=alice, body="earlier")
    _, welcome = await enter_room(socket_for, alice)
    assert welcome["user"] == {"id": alice.id, "username": "alice"}
    assert welcome["room"] == {"slug": "lobby", "title": "Lobby", "private": False}
    assert [m["id"] for m in welcome["messages"]] == [sent.id]
    assert (welcome["online"], welcome["online_count"]) == (["alice"], 1)
    assert welcome["last_id"] == sent.id


async def test_history_is_the_last_n_oldest_first_without_deleted(socket_for, alice, lobby, settings):
    """Welcome holds the last CHAT_HISTORY messages, oldest first; deleted ones are left out."""
    settings.CHAT_HISTORY = 4
    ids = [(await post(room=lobby, author=alice, body=f"m{i}"))[0].id for i in range(7)]
    deleted = await sync_to_async(Message.objects.get)(pk=ids[-2])
    await sync_to_async(services.delete_message)(message=deleted)
    _, welcome = await enter_room(socket_for, alice)
    assert [m["id"] for m in welcome["messages"]] == [ids[2], ids[3], ids[4], ids[6]]
    assert [m["body"] for m in welcome["messages"]] == ["m2", "m3", "m4", "m6"]


async def test_resume_replays_what_was_missed_in_capped_pages(socket_for, alice, lobby, settings):
    """Resume after an id replays every later message once, ascending, in capped pages."""
    settings.CHAT_REPLAY_LIMIT = 2
    ids = [(await post(room=lobby, author=alice, body=f"m{i}"))[0].id for i in range(6)]
    socket, _ = await enter_room(socket_for, alice)
    live, _ = await post(room=lobby, author=alice, body="live")
    assert (await receive_type(socket, "message"))["message"]["id"] == live.id
    got: list[int] = []
    after = ids[0]
    while True:
        await socket.send_json_to({"type": "resume", "after": after})
        while (frame := await socket.receive_json_from())["type"] == "message":
            got.append(frame["message"]["id"])
        assert frame["type"] == "replay_done"
        after = frame["last_id"]
        if not frame["more"]:
            break
    # The live one is not sent twice.
    assert got == ids[1:]
    assert after == live.id


async def test_a_live_push_that_overtakes_an_earlier_one_fills_the_gap(socket_for, alice, lobby):
    """When a push arrives before an earlier one, the socket reads the gap and sends in order."""
    from channels.layers import get_channel_layer

    from chat.serializers import message_dict
    from realtime.fanout.hub import envelope
    from realtime.protocol import Event, room_group

    socket, _ = await enter_room(socket_for, alice)

    def post_without_push(body):
        from django.db import transaction

        with transaction.atomic():
            message, _ = services.post_message(room=lobby, author=alice, body=body)
            transaction.get_connection().run_on_commit.clear()  # as if still in flight
        return message

    first = await sync_to_async(post_without_push)("delayed")
    second, _ = await post(room=lobby, author=alice, body="overtaking")
    frames = [await receive_type(socket, "message") for _ in range(2)]
    assert [f["message"]["id"] for f in frames] == [first.id, second.id]
    late = {"type": Event.MESSAGE, "message": await sync_to_async(message_dict)(first), "prev_id": None}
    await get_channel_layer().group_send(room_group(lobby.id), envelope(room_group(lobby.id), late))
    await assert_quiet(socket)


async def test_replay_racing_concurrent_posts_delivers_each_id_once(socket_for, alice, lobby, monkeypatch):
    """Messages committed just before and just after the replay query both arrive exactly once."""
    from chat import consumers, selectors

    older = [(await post(room=lobby, author=alice, body=f"old{i}"))[0].id for i in range(3)]
    raced: list[int] = []

    def replay_with_writers_around_it(wanted):
        # One writer commits before the replay's query (the replay includes it,
        # so its live push must be dropped), another right after (only its live
        # push can deliver it).
        raced.append(services.post_message(room=lobby, author=alice, body="before query")[0].id)
        [rows] = selectors.readable_messages_many([wanted])
        raced.append(services.post_message(room=lobby, author=alice, body="after query")[0].id)
        return rows

    socket, _ = await enter_room(socket_for, alice)
    monkeypatch.setattr(consumers, "readable_messages", sync_to_async(replay_with_writers_around_it))
    await socket.send_json_to({"type": "resume", "after": 0})
    ids: list[int] = []
    while (frame := await socket.receive_json_from())["type"] == "message":
        ids.append(frame["message"]["id"])
    assert frame == {"type": "replay_done", "last_id": raced[0], "more": False}
    ids.append((await receive_type(socket, "message"))["message"]["id"])
    await assert_quiet(socket)
    assert ids == [*older, *raced]


async def test_duplicate_client_id_stores_one_row_and_answers_only_the_sender(socket_for, alice, bob, lobby):
    """Re-sending a client_id stores nothing; the sender alone gets the original back."""
    bobs, _ = await enter_room(socket_for, bob)
    alices, _ = await enter_room(socket_for, alice)
    await alices.send_json_to({"type": "message", "body": "once", "client_id": "same"})
    original = (await receive_type(alices, "message"))["message"]
    assert (await receive_type(bobs, "message"))["message"] == original
    await alices.send_json_to({"type": "message", "body": "once, again", "client_id": "same"})
    assert (await receive_type(alices, "message"))["message"] == original
    assert await count_messages(room=lobby) == 1
    await assert_quiet(bobs)
    # Bob may use the same client_id: it is per author.
    await bobs.send_json_to({"type": "message", "body": "mine", "client_id": "same"})
    assert (await receive_type(alices, "message"))["message"]["author"] == "bob"
    assert await count_messages(room=lobby) == 2


async def test_typing_goes_to_the_others_and_is_not_stored(socket_for, alice, bob, lobby):
    """A typing frame reaches the other sockets, not the sender's, and stores nothing."""
    bobs, _ = await enter_room(socket_for, bob)
    alices, _ = await enter_room(socket_for, alice)
    await alices.send_json_to({"type": "typing"})
    assert await receive_type(bobs, "typing") == {"type": "typing", "user": "alice"}
    await assert_quiet(alices)
    assert await count_messages(room=lobby) == 0


async def test_two_tabs_of_one_user_give_one_joined_and_one_left(socket_for, alice, bob, lobby):
    """Presence counts a user once: joined on the first tab in, left on the last tab out."""
    bobs, welcome = await enter_room(socket_for, bob)
    assert (welcome["online"], welcome["online_count"]) == (["bob"], 1)
    # Bob's own arrival is news for the room too, his socket included.
    assert await receive_type(bobs, "presence") == presence_frame(joined=["bob"], count=1)
    tab1, welcome = await enter_room(socket_for, alice)
    assert (welcome["online"], welcome["online_count"]) == (["alice", "bob"], 2)
    assert await receive_type(bobs, "presence") == presence_frame(joined=["alice"], count=2)
    tab2, welcome = await enter_room(socket_for, alice)
    assert (welcome["online"], welcome["online_count"]) == (["alice", "bob"], 2)
    await tab1.disconnect()
    # Bob's next presence frame is the last tab's leave: the second tab and the
    # first tab's close announced nothing.
    await tab2.disconnect()
    assert await receive_type(bobs, "presence") == presence_frame(left=["alice"], count=1)
    await assert_quiet(bobs)


async def test_moderator_delete_is_pushed_live(socket_for, alice, bob, lobby):
    """delete_message reaches every socket in the room as message_deleted."""
    message, _ = await post(room=lobby, author=bob, body="oops")
    socket, _ = await enter_room(socket_for, alice)
    await sync_to_async(services.delete_message)(message=message, by=alice)
    assert await receive_type(socket, "message_deleted") == {"type": "message_deleted", "id": message.id}


async def test_system_message_has_no_author(socket_for, alice, lobby):
    """A message posted with author=None arrives with author null."""
    socket, _ = await enter_room(socket_for, alice)
    message, _ = await post(room=lobby, author=None, body="Deploy finished")
    frame = await receive_type(socket, "message")
    assert frame["message"]["author"] is None
    assert frame["message"]["id"] == message.id
