"""The handshake queue through the real ASGI application (`config.asgi`), in this process.

What counts as a handshake in progress, the refusal's two forms (503 with
Retry-After where the server offers ASGI's WebSocket Denial Response extension,
accept and close 1013 where it does not, as channels' WebsocketCommunicator),
and the refusal log line. Counts are taken relative to what this process
already holds. The servers' side is test_load_shedding_servers.py.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from channels.testing import ApplicationCommunicator
from django.test import override_settings

from realtime import handshake_queue
from testsupport.asgi import receive_type
from testsupport.faults import poll
from testsupport.handshakes import credentials_locked

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


async def until_counted(count: int) -> None:
    async def reached() -> bool:
        return handshake_queue.in_progress() == count

    await poll(reached, seconds=10, what=f"{count} handshakes in progress")


def denial_scope(path: str = "/ws/notifications/") -> dict:
    """A socket's scope from a server that offers the Denial Response extension (uvicorn; daphne adapted)."""
    return {
        "type": "websocket",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"localhost")],
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}},
    }


async def test_a_full_queue_refuses_at_once_with_503_or_1013_and_lets_sockets_in_once_drained(
    socket_for, alice
):
    """One held handshake fills a queue of one: 503 with Retry-After, or 1013 `overloaded`; then in again."""
    from config.asgi import application

    base = handshake_queue.in_progress()
    held = await socket_for("/ws/notifications/", alice, connect=False)
    refused = await socket_for("/ws/notifications/", origin=None, connect=False)
    denied = ApplicationCommunicator(application, denial_scope())
    with override_settings(WS_HANDSHAKE_QUEUE_LIMIT=base + 1, WS_HANDSHAKE_RETRY_AFTER_SECONDS=4):
        async with credentials_locked():
            held_connect = asyncio.ensure_future(held.connect(timeout=20))
            await until_counted(base + 1)

            assert await refused.connect() == (True, None)
            assert await refused.receive_output() == {
                "type": "websocket.close",
                "code": 1013,
                "reason": "overloaded",
            }

            await denied.send_input({"type": "websocket.connect"})
            start = await denied.receive_output()
            body = await denied.receive_output()
            await denied.wait()
            assert not held_connect.done()  # refused without waiting for any lookup
        assert await held_connect == (True, None)
        assert (await receive_type(held, "welcome"))["user"]["username"] == "alice"
    await until_counted(base)
    assert (start["type"], start["status"]) == ("websocket.http.response.start", 503)
    assert dict(start["headers"])[b"retry-after"] == b"4"
    assert body["type"] == "websocket.http.response.body"
    assert json.loads(body["body"])["error"] == "overloaded"

    again = await socket_for("/ws/notifications/", alice)
    assert (await receive_type(again, "welcome"))["user"]["username"] == "alice"


async def test_a_handshake_ends_when_its_socket_waits_for_an_auth_frame(socket_for):
    """Accepted without credentials, a socket is out of the queue: a queue of one still takes another."""
    base = handshake_queue.in_progress()
    with override_settings(WS_HANDSHAKE_QUEUE_LIMIT=base + 1):
        first = await socket_for("/ws/notifications/", origin=None)
        await first.send_json_to({"type": "ping"})
        await receive_type(first, "pong")  # its connect handler is done, and it reads frames
        assert handshake_queue.in_progress() == base
        second = await socket_for("/ws/notifications/", origin=None)
        await second.send_json_to({"type": "ping"})
        await receive_type(second, "pong")


async def test_a_handshake_ends_when_the_application_refuses_it(socket_for, alice):
    """A foreign Origin (403, the application returns) leaves nothing counted."""
    base = handshake_queue.in_progress()
    foreign = await socket_for("/ws/notifications/", alice, origin="http://evil.example", connect=False)
    assert (await foreign.connect())[0] is False
    await foreign.wait()
    assert handshake_queue.in_progress() == base


async def test_a_limit_of_zero_never_refuses(socket_for, alice):
    """WS_HANDSHAKE_QUEUE_LIMIT=0: with a handshake held, the next one still gets in."""
    base = handshake_queue.in_progress()
    held = await socket_for("/ws/notifications/", alice, connect=False)
    with override_settings(WS_HANDSHAKE_QUEUE_LIMIT=0):
        async with credentials_locked():
            held_connect = asyncio.ensure_future(held.connect(timeout=20))
            await until_counted(base + 1)
            other = await socket_for("/ws/notifications/", origin=None)
            await other.send_json_to({"type": "ping"})
            await receive_type(other, "pong")
        assert await held_connect == (True, None)


async def test_refusals_are_logged_once_per_interval_with_their_count(socket_for, alice, caplog):
    """A storm of refusals costs a log line per WS_ERROR_LOG_INTERVAL_SECONDS, counting the ones between."""
    caplog.set_level(logging.WARNING, logger="realtime.handshakes")
    base = handshake_queue.in_progress()
    held = await socket_for("/ws/notifications/", alice, connect=False)
    refused = [await socket_for("/ws/live/", origin=None, connect=False) for _ in range(5)]

    async def refuse(socket) -> None:
        assert await socket.connect() == (True, None)
        assert (await socket.receive_output())["code"] == 1013

    def lines() -> list[str]:
        return [record.getMessage() for record in caplog.records if record.name == "realtime.handshakes"]

    with override_settings(WS_HANDSHAKE_QUEUE_LIMIT=base + 1):
        async with credentials_locked():
            held_connect = asyncio.ensure_future(held.connect(timeout=20))
            await until_counted(base + 1)
            with override_settings(WS_ERROR_LOG_INTERVAL_SECONDS=0):
                await refuse(refused[0])  # logged at once (with any left unlogged before)
            caplog.clear()
            with override_settings(WS_ERROR_LOG_INTERVAL_SECONDS=3600):
                for socket in refused[1:4]:
                    await refuse(socket)
            assert lines() == []
            with override_settings(WS_ERROR_LOG_INTERVAL_SECONDS=0):
                await refuse(refused[4])
        assert await held_connect == (True, None)
    assert lines() == [f"event=handshakes_refused count=4 in_progress={base + 1} limit={base + 1}"]
