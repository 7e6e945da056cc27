"""What the /ws/chat/<slug>/ socket refuses, and how, through the full ASGI application.

Rooms a user may not enter (4403, 4404), posts past the rate limit
(`rate_limited`, then 4429), malformed or oversized frames (the contract's
error code, 1009), and frames before authentication (`not_authenticated`).
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chat import services
from chat.models import Message
from testsupport.asgi import assert_quiet, enter_room, receive_type

pytestmark = pytest.mark.django_db(transaction=True)

count_messages = sync_to_async(lambda **kw: Message.objects.filter(**kw).count())


async def test_private_room_refuses_a_non_member_with_4403(socket_for, alice, carol, secret_room):
    """Carol is not a member of the private room: closed 4403; Alice is admitted."""
    socket = await socket_for("/ws/chat/secret/", carol)
    assert await socket.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": 4403,
        "reason": "forbidden",
    }
    _, welcome = await enter_room(socket_for, alice, "secret")
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


async def test_rate_limit_stores_nothing_and_others_see_nothing(socket_for, alice, bob, lobby, settings):
    """Past the burst, a message gets rate_limited, is not stored and reaches nobody."""
    settings.CHAT_RATE_BURST = 3
    settings.CHAT_RATE_PER_SECOND = 0.001  # no refill during the test
    bobs, _ = await enter_room(socket_for, bob)
    alices, _ = await enter_room(socket_for, alice)
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
    there, _ = await enter_room(socket_for, alice, "elsewhere")
    await there.send_json_to({"type": "message", "body": "ok", "client_id": "e"})
    assert (await receive_type(there, "message"))["message"]["room"] == "elsewhere"


async def test_sustained_abuse_of_the_rate_limit_closes_with_4429(socket_for, alice, lobby, settings):
    """After CHAT_ABUSE_LIMIT rate_limited answers in the window, the socket is closed 4429."""
    settings.CHAT_RATE_BURST = 1
    settings.CHAT_RATE_PER_SECOND = 0.001
    settings.CHAT_ABUSE_LIMIT = 3
    settings.CHAT_ABUSE_WINDOW_SECONDS = 3600
    socket, _ = await enter_room(socket_for, alice)
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
    control, _ = await enter_room(socket_for, bob)
    socket, _ = await enter_room(socket_for, alice)
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
    socket, _ = await enter_room(socket_for, alice)
    await socket.send_json_to({"type": "message", "body": "", "client_id": "x", "ref": "r-9"})
    error = await receive_type(socket, "error")
    assert (error["code"], error["ref"]) == ("invalid_message", "r-9")


async def test_a_body_of_exactly_the_limit_is_accepted(socket_for, alice, lobby, settings):
    """CHAT_MAX_BODY characters (after trimming) is allowed; one more is too_large."""
    socket, _ = await enter_room(socket_for, alice)
    body = "\u00e9" * settings.CHAT_MAX_BODY
    await socket.send_json_to({"type": "message", "body": f"  {body}  ", "client_id": "max"})
    assert (await receive_type(socket, "message"))["message"]["body"] == body
    await socket.send_json_to({"type": "message", "body": body + "x", "client_id": "over"})
    assert (await receive_type(socket, "error"))["code"] == "too_large"


async def test_frame_over_the_size_limit_closes_with_1009(socket_for, alice, lobby, settings):
    """A frame larger than WS_MAX_FRAME_BYTES (64 KiB) closes the socket with 1009."""
    socket, _ = await enter_room(socket_for, alice)
    body = "x" * (settings.WS_MAX_FRAME_BYTES + 1)
    await socket.send_to(text_data='{"type": "message", "client_id": "big", "body": "' + body + '"}')
    assert (await socket.receive_output(timeout=5))["code"] == 1009
    assert await count_messages(room=lobby) == 0


async def test_frames_before_authentication_get_not_authenticated(socket_for, lobby):
    """Without credentials a chat socket refuses frames until auth, and closes 4401 at the deadline."""
    socket = await socket_for("/ws/chat/lobby/")
    await socket.send_json_to({"type": "message", "body": "hi", "client_id": "x"})
    assert (await receive_type(socket, "error"))["code"] == "not_authenticated"
    assert await count_messages() == 0
