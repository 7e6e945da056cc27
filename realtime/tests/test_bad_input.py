"""Hostile and malformed input, table-driven, over both sockets and the HTTP API (issue 7).

Every case checks the same four things besides its own answer:
- the contract's error code, HTTP status or close code;
- the worker stays up: a control socket in the same room (or inbox) still
  receives a live message written after the bad input;
- nothing is stored (row counts unchanged), except the cases that must store
  hostile text verbatim (SQL, HTML), which check it comes back as plain text;
- no traceback and no ERROR record in the logs.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers

from chat import services as chat_services
from chat.models import Message
from chat.presence import get_store
from notifications import services as notification_services
from notifications.models import Notification
from realtime.authentication import apikeys
from testsupport.asgi import closed_with, http, receive_type
from testsupport.auth import make_token

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE = "'; DROP TABLE chat_message; -- <script>alert(1)</script> \" OR 1=1 --"
LONE_SURROGATE = '{"type": "ping", "ref": "\ud800"}'  # a str no UTF-8 encoder accepts


@dataclass
class Case:
    """One bad input. `where` picks the runner; `expect` is what the contract says."""

    id: str
    where: str  # "notifications" | "chat" | "http" | "connect"
    send: Any
    expect: tuple
    stores: int = 0  # rows a case may legitimately add (hostile text stored verbatim)
    extra: dict = field(default_factory=dict)


def ws(text: str) -> dict:
    return {"text": text}


# --- the table ---------------------------------------------------------------------------------
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
    # HTTP API.
    Case("http-publish-truncated", "http", ("publish-chat", b'{"body": "x'), ("http", 400, "invalid_json")),
    Case(
        "http-publish-invalid-utf8",
        "http",
        ("publish-chat", b'{"body": "\xff\xfe"}'),
        ("http", 400, "invalid_json"),
    ),
    Case(
        "http-publish-lone-surrogate",
        "http",
        ("publish-chat", b'{"body": "\\udc00"}'),
        ("http", 400, "invalid_json"),
    ),
    Case("http-publish-array", "http", ("publish-chat", b'["body"]'), ("http", 400, "invalid_message")),
    Case("http-publish-empty", "http", ("publish-chat", b""), ("http", 400, "invalid_json")),
    Case(
        "http-publish-body-int", "http", ("publish-chat", b'{"body": 12}'), ("http", 400, "invalid_message")
    ),
    Case(
        "http-publish-nul",
        "http",
        ("publish-chat", b'{"body": "a\\u0000b"}'),
        ("http", 400, "invalid_message"),
    ),
    Case(
        "http-publish-combining",
        "http",
        ("publish-chat", ('{"body": "e' + "\u0301" * 10_000 + '"}').encode()),
        ("http", 413, "too_large"),
    ),
    Case(
        "http-publish-oversized",
        "http",
        ("publish-chat", b'{"body": "' + b"x" * 70_000 + b'"}'),
        ("http", 413, "too_large"),
    ),
    Case(
        "http-publish-slug-101",
        "http",
        ("publish-chat:" + "a" * 101, b'{"body": "x"}'),
        ("http", 404, "not_found"),
    ),
    Case(
        "http-notify-huge-number",
        "http",
        (
            "publish-notifications",
            b'{"users": ["alice"], "title": "t", "body": "b", "data": {"n": 1'
            + b"0" * 40
            + b'}, "level": 1e999}',
        ),
        ("http", 400, "invalid_json"),
    ),
    Case(
        "http-notify-wrong-types",
        "http",
        ("publish-notifications", b'{"users": "alice", "title": 1, "body": null}'),
        ("http", 400, "invalid_message"),
    ),
    Case(
        "http-notify-unknown-field",
        "http",
        ("publish-notifications", b'{"everyone": true, "title": "t", "body": "b"}'),
        ("http", 400, "invalid_message"),
    ),
    Case(
        "http-notify-bad-url",
        "http",
        (
            "publish-notifications",
            b'{"users": ["alice"], "title": "t", "body": "b", "url": "javascript:alert(1)"}',
        ),
        ("http", 400, "invalid_message"),
    ),
    Case(
        "http-notify-sql-html",
        "http",
        ("publish-notifications", None),  # built in the runner from HOSTILE
        ("stored",),
        stores=1,
    ),
    Case(
        "http-read-ids-strings",
        "http",
        ("read", b'{"ids": ["1; DROP TABLE x"]}'),
        ("http", 400, "invalid_message"),
    ),
    Case(
        "http-read-ids-huge",
        "http",
        ("read", b'{"ids": [99999999999999999999999]}'),
        ("http", 400, "invalid_message"),
    ),
    Case(
        "http-token-wrong-types",
        "http",
        ("token", b'{"username": ["alice"], "password": {"a": 1}}'),
        ("http", 400, "invalid_message"),
    ),
    Case(
        "http-token-sql",
        "http",
        ("token", b'{"username": "alice\' OR 1=1 --", "password": "x\' OR \'1\'=\'1"}'),
        ("http", 401, "invalid_credentials"),
    ),
    # Floods.
    Case("notif-200-pings", "notifications", {"flood": ('{"type": "ping"}', 200)}, ("flood", "pong")),
    Case("chat-50-bad-frames", "chat", {"flood": ("{oops", 50)}, ("flood", "error")),
    Case("chat-message-flood", "chat", {"flood_posts": 60}, ("close", 4429), stores=20),
]


# --- the runner ------------------------------------------------------------------------------
count_rows = sync_to_async(lambda: (Message.objects.count(), Notification.objects.count()))
system_post = sync_to_async(chat_services.post_message)
notify = sync_to_async(notification_services.notify)


@pytest.fixture(autouse=True)
async def own_keys(settings):
    """Presence and rate-limit keys of this test's own, and a fresh channel layer (see chat/tests)."""
    channel_layers.backends.clear()
    tag = uuid.uuid4().hex[:10]
    settings.PRESENCE_KEY_PREFIX = f"test-presence-{tag}"
    settings.CHAT_RATE_KEY_PREFIX = f"test-rate-{tag}"
    yield
    presence = get_store()
    if hasattr(presence, "aclose"):
        await presence.aclose()


@pytest.fixture
def lobby(db):
    return chat_services.create_room(slug="lobby", title="Lobby")


@pytest.fixture
def api_key(db):
    return apikeys.create_api_key(name="bad-input")[1]


async def next_of(socket, kind: str, match: Callable[[dict], bool] = lambda f: True) -> dict:
    """Skip frames (presence, echoes) until one of `kind` that matches; bounded by receive's WAIT."""
    for _ in range(500):
        frame = await socket.receive_json_from(timeout=10)
        if frame["type"] == kind and match(frame):
            return frame
    raise AssertionError(f"no {kind} frame")


async def still_up(control_chat, control_inbox, lobby, alice) -> None:
    """A live message and a live notification written now reach the control sockets."""
    marker = uuid.uuid4().hex
    await system_post(room=lobby, author=None, body=f"control {marker}")
    await next_of(control_chat, "message", lambda f: f["message"]["body"] == f"control {marker}")
    await notify(users=[alice], title=f"control {marker}")
    await next_of(control_inbox, "notification", lambda f: f["notification"]["title"] == f"control {marker}")


async def run_socket_case(case: Case, socket, kind: str) -> Any:
    send = case.send
    if "text" in send:
        await socket.send_input({"type": "websocket.receive", "text": send["text"]})
    elif "bytes" in send:
        await socket.send_input({"type": "websocket.receive", "bytes": send["bytes"]})
    elif "json" in send:
        await socket.send_to(text_data=json.dumps(send["json"]))
    elif "flood" in send:
        text, times = send["flood"]
        for _ in range(times):
            await socket.send_to(text_data=text)
    elif "flood_posts" in send:
        for i in range(send["flood_posts"]):
            await socket.send_json_to({"type": "message", "body": f"flood {i}", "client_id": f"f{i}"})
    expect = case.expect
    if expect[0] == "error":
        frame = await next_of(socket, "error")
        assert frame["code"] == expect[1], frame
        if "ref" in send.get("json", {}):
            assert frame["ref"] == send["json"]["ref"]  # echoed back as a plain string
        await socket.send_json_to({"type": "ping"})
        await next_of(socket, "pong")  # the bad frame did not close it
    elif expect[0] == "close":
        code, _ = await closed_with(socket)
        assert code == expect[1]
    elif expect[0] == "flood":
        _, times = send["flood"]
        for _ in range(times):
            frame = await next_of(socket, expect[1])
        await socket.send_json_to({"type": "ping"})
        await next_of(socket, "pong")
    elif expect[0] == "stored":
        frame = await next_of(socket, "message")
        # Verbatim: stored and returned as text, not escaped, not executed.
        assert frame["message"]["body"] == HOSTILE
        assert frame["message"]["client_id"] == HOSTILE[:64]
        stored = await sync_to_async(Message.objects.get)(pk=frame["message"]["id"])
        assert stored.body == HOSTILE
    return None


async def run_http_case(case: Case, api_key: str, alice) -> None:
    target, body = case.send
    headers = [(b"authorization", f"Api-Key {api_key}".encode())]
    if target.startswith("publish-chat"):
        slug = target.partition(":")[2] or "lobby"
        path = f"/api/publish/chat/{slug}/"
    elif target == "publish-notifications":
        path = "/api/publish/notifications/"
        if body is None:
            body = json.dumps(
                {"users": ["alice"], "title": HOSTILE, "body": HOSTILE, "data": {HOSTILE: HOSTILE}}
            ).encode()
    elif target == "read":
        path = "/api/notifications/read/"
        headers = [(b"authorization", f"Bearer {await sync_to_async(make_token)(alice)}".encode())]
    else:
        path, headers = "/api/token/", []
    status, answer, response_headers = await http("POST", path, body=body, headers=headers)
    assert response_headers["content-type"].startswith("application/json")
    if case.expect[0] == "http":
        assert (status, answer.get("error")) == case.expect[1:], answer
        assert isinstance(answer.get("detail"), str | dict)
    else:
        assert status == 202 and answer == {"recipients": 1}
        row = await sync_to_async(Notification.objects.latest)("id")
        assert (row.title, row.body, row.data) == (HOSTILE, HOSTILE, {HOSTILE: HOSTILE})


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_input(case: Case, socket_for, alice, bob, lobby, api_key, settings, caplog):
    caplog.set_level(logging.WARNING)
    if case.id == "chat-message-flood":
        settings.CHAT_RATE_PER_SECOND = 0.001  # no refill: exactly the burst is stored
    control_chat = await socket_for("/ws/chat/lobby/", bob)
    await receive_type(control_chat, "welcome")
    control_inbox = await socket_for("/ws/notifications/", alice)
    await receive_type(control_inbox, "welcome")
    before = await count_rows()

    if case.where in ("notifications", "chat"):
        path = "/ws/notifications/" if case.where == "notifications" else "/ws/chat/lobby/"
        socket = await socket_for(path, alice)
        await receive_type(socket, "welcome")
        await run_socket_case(case, socket, case.where)
    elif case.where == "connect":
        socket = await socket_for(case.send, alice)
        code, _ = await closed_with(socket)
        assert code == case.expect[1]
    else:
        await run_http_case(case, api_key, alice)

    after = await count_rows()
    added = (after[0] - before[0]) + (after[1] - before[1])
    assert added == case.stores, (before, after)
    await still_up(control_chat, control_inbox, lobby, alice)
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]
    assert "Traceback" not in caplog.text


def test_the_table_is_big_enough():
    assert len(CASES) >= 30
    assert {c.where for c in CASES} == {"notifications", "chat", "http", "connect"}
