"""Hostile and malformed input on both sockets and in room slugs, table-driven (issue 7).

Frames on /ws/chat/<slug>/ and /ws/notifications/ (framing and JSON, types
that look like handler or event names, sizes, hostile text, floods) and odd
room slugs in the socket's path. Each case gets the contract's error frame or
close code, and harms nothing: the checks around it are
`testsupport.bad_input.unharmed`. The HTTP API's cases are
`test_bad_input_http.py`.
"""

from __future__ import annotations

import pytest

from testsupport.asgi import closed_with, receive_type
from testsupport.bad_input import HOSTILE, Case, run_socket_case, unharmed, ws

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("own_redis_keys")]

LONE_SURROGATE = '{"type": "ping", "ref": "\ud800"}'  # a str no UTF-8 encoder accepts

CASES = [
    # Framing and JSON, on both sockets.
    Case(
        "notif-truncated-json", "notifications", ws('{"type": "resume", "after": '), ("error", "invalid_json")
    ),
    Case("chat-truncated-json", "chat", ws('{"type": "message", "body": "x'), ("error", "invalid_json")),
    Case("notif-empty", "notifications", ws(""), ("error", "invalid_json")),
    Case("chat-array", "chat", ws('[{"type": "message"}]'), ("error", "invalid_message")),
    Case("chat-string", "chat", ws('"message"'), ("error", "invalid_message")),
    Case("notif-null", "notifications", ws("null"), ("error", "invalid_message")),
    Case("notif-binary", "notifications", {"bytes": b"\x00\xffbinary"}, ("error", "invalid_message")),
    Case(
        "chat-binary-json",
        "chat",
        {"bytes": b'{"type": "message", "body": "b", "client_id": "b"}'},
        ("error", "invalid_message"),
    ),
    Case(
        "chat-invalid-utf8-bytes",
        "chat",
        {"bytes": b'{"type": "ping"}\xc3\x28'},
        ("error", "invalid_message"),
    ),
    Case("notif-lone-surrogate", "notifications", ws(LONE_SURROGATE), ("error", "invalid_json")),
    Case(
        "chat-escaped-lone-surrogate",
        "chat",
        ws('{"type": "message", "body": "\\ud800", "client_id": "s"}'),
        ("error", "invalid_json"),
    ),
    Case(
        "chat-nul-in-body",
        "chat",
        ws('{"type": "message", "body": "a\\u0000b", "client_id": "n"}'),
        ("error", "invalid_message"),
    ),
    Case("notif-nan", "notifications", ws('{"type": "resume", "after": NaN}'), ("error", "invalid_json")),
    Case(
        "notif-huge-number",
        "notifications",
        ws('{"type": "resume", "after": 1' + "0" * 40 + "}"),
        ("error", "invalid_message"),
    ),
    Case(
        "notif-inf-number",
        "notifications",
        ws('{"type": "resume", "after": 1e999}'),
        ("error", "invalid_json"),
    ),
    Case(
        "notif-2-64",
        "notifications",
        ws('{"type": "resume", "after": 18446744073709551616}'),
        ("error", "invalid_message"),
    ),
    Case(
        "notif-negative", "notifications", ws('{"type": "resume", "after": -1}'), ("error", "invalid_message")
    ),
    Case(
        "notif-after-string",
        "notifications",
        ws('{"type": "resume", "after": "5"}'),
        ("error", "invalid_message"),
    ),
    Case(
        "notif-after-bool",
        "notifications",
        ws('{"type": "resume", "after": true}'),
        ("error", "invalid_message"),
    ),
    Case(
        "notif-ids-nested",
        "notifications",
        ws('{"type": "mark_read", "ids": [[1]]}'),
        ("error", "invalid_message"),
    ),
    Case(
        "chat-body-object",
        "chat",
        ws('{"type": "message", "body": {"$gt": ""}, "client_id": "o"}'),
        ("error", "invalid_message"),
    ),
    Case("chat-ref-int", "chat", ws('{"type": "ping", "ref": 7}'), ("error", "invalid_message")),
    Case(
        "chat-deep-nesting",
        "chat",
        ws('{"type": "ping", "x": ' + "[" * 2000 + "]" * 2000 + "}"),
        ("error", "invalid_json"),
    ),
    # Types that look like handler or event names never reach a handler.
    Case(
        "notif-websocket-disconnect",
        "notifications",
        ws('{"type": "websocket.disconnect", "code": 1000}'),
        ("error", "unknown_type"),
    ),
    Case(
        "chat-websocket-receive",
        "chat",
        ws('{"type": "websocket.receive", "text": "{}"}'),
        ("error", "unknown_type"),
    ),
    Case(
        "chat-push-message",
        "chat",
        ws('{"type": "push.message", "message": {"id": 1}}'),
        ("error", "unknown_type"),
    ),
    Case(
        "notif-push-disconnect", "notifications", ws('{"type": "push.disconnect"}'), ("error", "unknown_type")
    ),
    Case(
        "chat-hub-event",
        "chat",
        ws('{"type": "hub.event", "group": "room.1", "event": {}}'),
        ("error", "unknown_type"),
    ),
    Case("chat-chat-message", "chat", ws('{"type": "chat.message", "body": "x"}'), ("error", "unknown_type")),
    Case("notif-dunder", "notifications", ws('{"type": "__init__"}'), ("error", "unknown_type")),
    Case("chat-frame-underscore", "chat", ws('{"type": "frame_message"}'), ("error", "unknown_type")),
    # Sizes.
    Case(
        "chat-10k-combining-marks",
        "chat",
        ws('{"type": "message", "body": "e' + "\u0301" * 10_000 + '", "client_id": "z"}'),
        ("error", "too_large"),
    ),
    Case(
        "chat-oversized-frame",
        "chat",
        ws('{"type": "message", "body": "' + "x" * 70_000 + '", "client_id": "big"}'),
        ("close", 1009),
    ),
    Case("notif-oversized-binary", "notifications", {"bytes": b"\x00" * 70_000}, ("close", 1009)),
    Case(
        "notif-too-many-ids",
        "notifications",
        ws('{"type": "mark_read", "ids": [' + ",".join(str(i) for i in range(1, 1002)) + "]}"),
        ("error", "too_large"),
    ),
    # Hostile text is stored verbatim and comes back as text.
    Case(
        "chat-sql-html-body",
        "chat",
        {"json": {"type": "message", "body": HOSTILE, "client_id": HOSTILE[:64]}},
        ("stored",),
        stores=1,
    ),
    Case(
        "chat-sql-html-ref",
        "chat",
        {"json": {"type": "bogus", "ref": "<img src=x onerror=alert(1)>' OR 1=1"}},
        ("error", "unknown_type"),
    ),
    Case(
        "chat-sql-resume", "chat", ws('{"type": "resume", "after": "0 OR 1=1"}'), ("error", "invalid_message")
    ),
    # Room slugs.
    Case("slug-101-chars", "connect", "/ws/chat/" + "a" * 101 + "/", ("close", 4404)),
    Case("slug-sql", "connect", "/ws/chat/lobby'%20OR%201=1--/", ("close", 4404)),
    Case("slug-html", "connect", "/ws/chat/%3Cscript%3E/", ("close", 4404)),
    Case("slug-nul", "connect", "/ws/chat/lob%00by/", ("close", 4404)),
    Case("slug-traversal", "connect", "/ws/chat/../notifications/", ("close", 4404)),
    # Floods.
    Case("notif-200-pings", "notifications", {"flood": ('{"type": "ping"}', 200)}, ("flood", "pong")),
    Case("chat-50-bad-frames", "chat", {"flood": ("{oops", 50)}, ("flood", "error")),
    Case("chat-message-flood", "chat", {"flood_posts": 60}, ("close", 4429), stores=20),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_a_bad_frame_or_room_slug_gets_its_answer_and_harms_nothing(
    case: Case, socket_for, alice, bob, lobby, settings, caplog
):
    """The contract's error frame or close code; the worker stays up, stores only what it may, no ERROR."""
    if case.id == "chat-message-flood":
        settings.CHAT_RATE_PER_SECOND = 0.001  # no refill: exactly the burst is stored
    async with unharmed(case, socket_for, alice, bob, lobby, caplog):
        if case.where == "connect":
            socket = await socket_for(case.send, alice)
            code, _ = await closed_with(socket)
            assert code == case.expect[1]
        else:
            path = "/ws/notifications/" if case.where == "notifications" else "/ws/chat/lobby/"
            socket = await socket_for(path, alice)
            await receive_type(socket, "welcome")
            await run_socket_case(case, socket, case.where)
