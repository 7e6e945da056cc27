"""Hostile and malformed input (realtime/tests/test_bad_input_*.py): a case, its runners, the checks.

Every case checks the same four things besides its own answer (`unharmed`):
- the contract's error code, HTTP status or close code;
- the worker stays up: a control socket in the same room (or inbox) still
  receives a live message written after the bad input;
- nothing is stored (row counts unchanged), except the cases that must store
  hostile text verbatim (SQL, HTML), which check it comes back as plain text;
- no traceback and no ERROR record in the logs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async

from chat import services as chat_services
from chat.models import Message
from notifications import services as notification_services
from notifications.models import Notification
from testsupport.asgi import closed_with, http, receive_type
from testsupport.auth import make_token

HOSTILE = "'; DROP TABLE chat_message; -- <script>alert(1)</script> \" OR 1=1 --"


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


count_rows = sync_to_async(lambda: (Message.objects.count(), Notification.objects.count()))
system_post = sync_to_async(chat_services.post_message)
notify = sync_to_async(notification_services.notify)


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


@contextlib.asynccontextmanager
async def unharmed(case: Case, socket_for, alice, bob, lobby, caplog) -> AsyncIterator[None]:
    """Around a bad input: control sockets live after it, rows added as the case allows, no ERROR logged."""
    caplog.set_level(logging.WARNING)
    control_chat = await socket_for("/ws/chat/lobby/", bob)
    await receive_type(control_chat, "welcome")
    control_inbox = await socket_for("/ws/notifications/", alice)
    await receive_type(control_inbox, "welcome")
    before = await count_rows()
    yield
    after = await count_rows()
    added = (after[0] - before[0]) + (after[1] - before[1])
    assert added == case.stores, (before, after)
    await still_up(control_chat, control_inbox, lobby, alice)
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]
    assert "Traceback" not in caplog.text
