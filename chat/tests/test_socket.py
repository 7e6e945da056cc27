"""The /ws/chat/<slug>/ socket, through the full ASGI application."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chat import services
from chat.models import Message
from testsupport.asgi import receive_type

pytestmark = pytest.mark.django_db(transaction=True)

post = sync_to_async(services.post_message)
count_messages = sync_to_async(lambda **kw: Message.objects.filter(**kw).count())


async def enter(socket_for, user, slug="lobby"):
    """Open a socket in a room and return it with its welcome frame."""
    socket = await socket_for(f"/ws/chat/{slug}/", user)
    return socket, await receive_type(socket, "welcome")


def presence_frame(*, joined=(), left=(), count: int) -> dict:
    return {"type": "presence", "joined": list(joined), "left": list(left), "online_count": count}


async def assert_quiet(socket):
    """The socket's next frame, presence aside, answers a ping: nothing else was waiting before it."""
    await socket.send_json_to({"type": "ping"})
    assert await receive_type(socket, "pong") == {"type": "pong"}


async def test_two_users_chat_and_another_room_hears_nothing(
    socket_for, alice, bob, carol, lobby, other_room
):
    """A message reaches every socket in the room, the sender's included, and no other room."""
    alices, _ = await enter(socket_for, alice)
    bobs, _ = await enter(socket_for, bob)
    carols, _ = await enter(socket_for, carol, "other")
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
    _, welcome = await enter(socket_for, alice)
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
    _, welcome = await enter(socket_for, alice)
    assert [m["id"] for m in welcome["messages"]] == [ids[2], ids[3], ids[4], ids[6]]
    assert [m["body"] for m in welcome["messages"]] == ["m2", "m3", "m4", "m6"]


async def test_private_room_refuses_a_non_member_with_4403(socket_for, alice, carol, secret_room):
    """Carol is not a member of the private room: closed 4403; Alice is admitted."""
    socket = await socket_for("/ws/chat/secret/", carol)
    assert await socket.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": 4403,
        "reason": "forbidden",
    }
    _, welcome = await enter(socket_for, alice, "secret")
    assert welcome["room"]["private"] is True


@pytest.mark.parametrize(
    "slug",
    ["nope", "x" * 101, "caf\u00e9", "a.b", "semi;colon", "a/b", "..", "%00", "l" * 5000],
    ids=["unknown", "101-chars", "non-ascii", "dot", "semicolon", "slash", "dotdot", "percent", "huge"],
)
async def test_unknown_or_odd_room_closes_with_4404(socket_for, alice, lobby, slug):
    """A slug that names no room, however odd, is closed 4404 without a server error."""
    socket = await socket_for(f"/ws/chat/{slug}/", alice)
    assert await socket.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": 4404,
        "reason": "no_such_room",
    }


async def test_resume_replays_what_was_missed_in_capped_pages(socket_for, alice, lobby, settings):
    """Resume after an id replays every later message once, ascending, in capped pages."""
    settings.CHAT_REPLAY_LIMIT = 2
    ids = [(await post(room=lobby, author=alice, body=f"m{i}"))[0].id for i in range(6)]
    socket, _ = await enter(socket_for, alice)
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

    socket, _ = await enter(socket_for, alice)

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

    def replay_with_writers_around_it(**kwargs):
        # One writer commits before the replay's query (the replay includes it,
        # so its live push must be dropped), another right after (only its live
        # push can deliver it).
        raced.append(services.post_message(room=lobby, author=alice, body="before query")[0].id)
        rows = selectors.readable_messages_after(**kwargs)
        raced.append(services.post_message(room=lobby, author=alice, body="after query")[0].id)
        return rows

    socket, _ = await enter(socket_for, alice)
    monkeypatch.setattr(consumers, "readable_messages_after", sync_to_async(replay_with_writers_around_it))
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
    bobs, _ = await enter(socket_for, bob)
    alices, _ = await enter(socket_for, alice)
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
    bobs, _ = await enter(socket_for, bob)
    alices, _ = await enter(socket_for, alice)
    await alices.send_json_to({"type": "typing"})
    assert await receive_type(bobs, "typing") == {"type": "typing", "user": "alice"}
    await assert_quiet(alices)
    assert await count_messages(room=lobby) == 0


async def test_two_tabs_of_one_user_give_one_joined_and_one_left(socket_for, alice, bob, lobby):
    """Presence counts a user once: joined on the first tab in, left on the last tab out."""
    bobs, welcome = await enter(socket_for, bob)
    assert (welcome["online"], welcome["online_count"]) == (["bob"], 1)
    # Bob's own arrival is news for the room too, his socket included.
    assert await receive_type(bobs, "presence") == presence_frame(joined=["bob"], count=1)
    tab1, welcome = await enter(socket_for, alice)
    assert (welcome["online"], welcome["online_count"]) == (["alice", "bob"], 2)
    assert await receive_type(bobs, "presence") == presence_frame(joined=["alice"], count=2)
    tab2, welcome = await enter(socket_for, alice)
    assert (welcome["online"], welcome["online_count"]) == (["alice", "bob"], 2)
    await tab1.disconnect()
    # Bob's next presence frame is the last tab's leave: the second tab and the
    # first tab's close announced nothing.
    await tab2.disconnect()
    assert await receive_type(bobs, "presence") == presence_frame(left=["alice"], count=1)
    await assert_quiet(bobs)


async def test_rate_limit_stores_nothing_and_others_see_nothing(socket_for, alice, bob, lobby, settings):
    """Past the burst, a message gets rate_limited, is not stored and reaches nobody."""
    settings.CHAT_RATE_BURST = 3
    settings.CHAT_RATE_PER_SECOND = 0.001  # no refill during the test
    bobs, _ = await enter(socket_for, bob)
    alices, _ = await enter(socket_for, alice)
    for i in range(4):
        await alices.send_json_to({"type": "message", "body": f"m{i}", "client_id": f"c{i}", "ref": f"r{i}"})
    # The error is a direct answer; the messages come back through the layer, in any order with it.
    frames = [await alices.receive_json_from() for _ in range(4)]
    errors = [f for f in frames if f["type"] == "error"]
    assert [(e["code"], e["ref"]) for e in errors] == [("rate_limited", "r3")]
    assert [f["message"]["body"] for f in frames if f["type"] == "message"] == ["m0", "m1", "m2"]
    assert [(await receive_type(bobs, "message"))["message"]["body"] for _ in range(3)] == ["m0", "m1", "m2"]
    await assert_quiet(bobs)
    assert await count_messages(room=lobby) == 3
    # The limit is per room: the same user may still post elsewhere.
    await sync_to_async(services.create_room)(slug="elsewhere", title="Elsewhere")
    there, _ = await enter(socket_for, alice, "elsewhere")
    await there.send_json_to({"type": "message", "body": "ok", "client_id": "e"})
    assert (await receive_type(there, "message"))["message"]["room"] == "elsewhere"


async def test_sustained_abuse_of_the_rate_limit_closes_with_4429(socket_for, alice, lobby, settings):
    """After CHAT_ABUSE_LIMIT rate_limited answers in the window, the socket is closed 4429."""
    settings.CHAT_RATE_BURST = 1
    settings.CHAT_RATE_PER_SECOND = 0.001
    settings.CHAT_ABUSE_LIMIT = 3
    settings.CHAT_ABUSE_WINDOW_SECONDS = 3600
    socket, _ = await enter(socket_for, alice)
    await socket.send_json_to({"type": "message", "body": "allowed", "client_id": "s0"})
    assert (await receive_type(socket, "message"))["message"]["client_id"] == "s0"
    for i in range(1, 4):
        await socket.send_json_to({"type": "message", "body": "spam", "client_id": f"s{i}"})
    for _ in range(3):
        assert (await receive_type(socket, "error"))["code"] == "rate_limited"
    assert await socket.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": 4429,
        "reason": "rate_limited",
    }
    assert await count_messages(room=lobby) == 1


BAD_FRAMES = [
    pytest.param({"text": "{not json"}, "invalid_json", id="bad-json"),
    pytest.param({"text": ""}, "invalid_json", id="empty"),
    pytest.param({"text": "[1, 2]"}, "invalid_message", id="array"),
    pytest.param({"text": "42"}, "invalid_message", id="number"),
    pytest.param({"bytes": b"\x00\x01binary"}, "invalid_message", id="binary"),
    pytest.param({"text": '{"body": "no type"}'}, "invalid_message", id="type-missing"),
    pytest.param({"text": '{"type": null}'}, "invalid_message", id="type-null"),
    pytest.param({"text": '{"type": "launch"}'}, "unknown_type", id="unknown-type"),
    pytest.param({"text": '{"type": "mark_read", "ids": [1]}'}, "unknown_type", id="other-endpoint-type"),
    pytest.param({"text": '{"type": "websocket.disconnect"}'}, "unknown_type", id="handler-name"),
    pytest.param({"text": '{"type": "push.message", "message": {}}'}, "unknown_type", id="event-name"),
    pytest.param({"text": '{"type": "message", "client_id": "x"}'}, "invalid_message", id="body-missing"),
    pytest.param({"text": '{"type": "message", "body": "hi"}'}, "invalid_message", id="client-id-missing"),
    pytest.param(
        {"text": '{"type": "message", "body": 5, "client_id": "x"}'}, "invalid_message", id="body-int"
    ),
    pytest.param(
        {"text": '{"type": "message", "body": null, "client_id": "x"}'}, "invalid_message", id="body-null"
    ),
    pytest.param(
        {"text": '{"type": "message", "body": ["hi"], "client_id": "x"}'}, "invalid_message", id="body-list"
    ),
    pytest.param(
        {"text": '{"type": "message", "body": "", "client_id": "x"}'}, "invalid_message", id="body-empty"
    ),
    pytest.param(
        {"text": '{"type": "message", "body": " \\n\\t ", "client_id": "x"}'},
        "invalid_message",
        id="body-blank",
    ),
    pytest.param(
        {"text": '{"type": "message", "body": "a\\u0000b", "client_id": "x"}'},
        "invalid_message",
        id="body-nul",
    ),
    pytest.param(
        {"text": '{"type": "message", "body": "hi", "client_id": ""}'},
        "invalid_message",
        id="client-id-empty",
    ),
    pytest.param(
        {"text": '{"type": "message", "body": "hi", "client_id": 7}'}, "invalid_message", id="client-id-int"
    ),
    pytest.param(
        {"text": '{"type": "message", "body": "hi", "client_id": "' + "c" * 65 + '"}'},
        "invalid_message",
        id="client-id-65-chars",
    ),
    pytest.param(
        {"text": '{"type": "message", "body": "' + "b" * 4001 + '", "client_id": "x"}'},
        "too_large",
        id="body-4001-chars",
    ),
    pytest.param(
        {"text": '{"type": "message", "body": "\\ud800", "client_id": "x"}'},
        "invalid_json",
        id="lone-surrogate",
    ),
    pytest.param({"text": '{"type": "resume", "after": "3"}'}, "invalid_message", id="after-string"),
    pytest.param({"text": '{"type": "resume", "after": -1}'}, "invalid_message", id="after-negative"),
    pytest.param({"text": '{"type": "resume", "after": 1e400}'}, "invalid_json", id="after-infinite"),
    pytest.param({"text": '{"type": "resume", "after": 1.5}'}, "invalid_message", id="after-float"),
    pytest.param(
        {"text": '{"type": "resume", "after": 100000000000000000000000}'}, "invalid_message", id="after-huge"
    ),
    pytest.param({"text": '{"type": "resume"}'}, "invalid_message", id="after-missing"),
    pytest.param({"text": '{"type": "auth", "token": ""}'}, "invalid_message", id="auth-empty-token"),
    pytest.param({"text": '{"type": "ping", "ref": 5}'}, "invalid_message", id="ref-not-string"),
]


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES)
async def test_bad_frame_gets_its_code_and_reaches_nobody(socket_for, alice, bob, lobby, frame, code):
    """Each bad frame gets the contract's code, stores nothing, reaches nobody; both sockets keep working."""
    control, _ = await enter(socket_for, bob)
    socket, _ = await enter(socket_for, alice)
    await socket.send_input({"type": "websocket.receive", **frame})
    error = await receive_type(socket, "error")
    assert error["code"] == code, error
    assert "Traceback" not in error["detail"]
    assert await count_messages(room=lobby) == 0
    await socket.send_json_to({"type": "message", "body": "still here", "client_id": "ok"})
    # The control socket's next frame is this message: the bad one sent it nothing.
    for s in (control, socket):
        assert (await receive_type(s, "message"))["message"]["body"] == "still here"


async def test_error_echoes_the_frames_ref(socket_for, alice, lobby):
    """A refused message with a string ref gets the same ref back."""
    socket, _ = await enter(socket_for, alice)
    await socket.send_json_to({"type": "message", "body": "", "client_id": "x", "ref": "r-9"})
    error = await receive_type(socket, "error")
    assert (error["code"], error["ref"]) == ("invalid_message", "r-9")


async def test_a_body_of_exactly_the_limit_is_accepted(socket_for, alice, lobby, settings):
    """CHAT_MAX_BODY characters (after trimming) is allowed; one more is too_large."""
    socket, _ = await enter(socket_for, alice)
    body = "\u00e9" * settings.CHAT_MAX_BODY
    await socket.send_json_to({"type": "message", "body": f"  {body}  ", "client_id": "max"})
    assert (await receive_type(socket, "message"))["message"]["body"] == body
    await socket.send_json_to({"type": "message", "body": body + "x", "client_id": "over"})
    assert (await receive_type(socket, "error"))["code"] == "too_large"


async def test_frame_over_the_size_limit_closes_with_1009(socket_for, alice, lobby, settings):
    """A frame larger than WS_MAX_FRAME_BYTES (64 KiB) closes the socket with 1009."""
    socket, _ = await enter(socket_for, alice)
    body = "x" * (settings.WS_MAX_FRAME_BYTES + 1)
    await socket.send_to(text_data='{"type": "message", "client_id": "big", "body": "' + body + '"}')
    assert (await socket.receive_output(timeout=5))["code"] == 1009
    assert await count_messages(room=lobby) == 0


async def test_moderator_delete_is_pushed_live(socket_for, alice, bob, lobby):
    """delete_message reaches every socket in the room as message_deleted."""
    message, _ = await post(room=lobby, author=bob, body="oops")
    socket, _ = await enter(socket_for, alice)
    await sync_to_async(services.delete_message)(message=message, by=alice)
    assert await receive_type(socket, "message_deleted") == {"type": "message_deleted", "id": message.id}


async def test_system_message_has_no_author(socket_for, alice, lobby):
    """A message posted with author=None arrives with author null."""
    socket, _ = await enter(socket_for, alice)
    message, _ = await post(room=lobby, author=None, body="Deploy finished")
    frame = await receive_type(socket, "message")
    assert frame["message"]["author"] is None
    assert frame["message"]["id"] == message.id


async def test_frames_before_authentication_get_not_authenticated(socket_for, lobby):
    """Without credentials a chat socket refuses frames until auth, and closes 4401 at the deadline."""
    socket = await socket_for("/ws/chat/lobby/")
    await socket.send_json_to({"type": "message", "body": "hi", "client_id": "x"})
    assert (await receive_type(socket, "error"))["code"] == "not_authenticated"
    assert await count_messages() == 0
