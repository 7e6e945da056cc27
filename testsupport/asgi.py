"""Requests and sockets through the real ASGI application (`config.asgi`), in the test's own process."""

from __future__ import annotations

import asyncio

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from testsupport.auth import session_cookie

ORIGIN = "http://localhost:8000"
# How long a test waits for a frame before failing. Generous on purpose: it
# bounds a hang, it does not measure speed (the machine may be busy).
WAIT = 10.0


class Sockets:
    """Sockets opened through the full ASGI app (`socket_for`); `close()` closes every one."""

    def __init__(self) -> None:
        self.opened: list[WebsocketCommunicator] = []

    async def open(
        self, path: str, user=None, *, origin: str | None = ORIGIN, headers=(), token=None, connect=True
    ) -> WebsocketCommunicator:
        from config.asgi import application

        all_headers = list(headers)
        if token is not None:
            all_headers.append((b"authorization", f"Bearer {token}".encode()))
        if origin is not None:
            all_headers.append((b"origin", origin.encode()))
        if user is not None:
            key = await sync_to_async(session_cookie)(user)
            all_headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={key}".encode()))
        communicator = WebsocketCommunicator(application, path, headers=all_headers)
        self.opened.append(communicator)
        if connect:
            connected, _ = await communicator.connect()
            assert connected, "handshake refused"
        return communicator

    async def close(self) -> None:
        for communicator in self.opened:
            try:
                await communicator.disconnect()
            except (Exception, asyncio.CancelledError):  # noqa: S110 - already closed or cancelled by the test
                pass


async def receive_type(communicator: WebsocketCommunicator, kind: str, wait: float = WAIT):
    """The next frame, asserting its type.

    `presence` frames come on the worker's timer (PRESENCE_FLUSH_MS), not in step
    with anything a test does, so they are passed over unless asked for.
    """
    while True:
        frame = await communicator.receive_json_from(timeout=wait)
        if frame["type"] != "presence" or kind == "presence":
            assert frame["type"] == kind, frame
            return frame


async def enter_room(socket_for, user, slug: str = "lobby") -> tuple[WebsocketCommunicator, dict]:
    """Open a socket in chat room `slug` (`socket_for`: the fixture); it and its welcome frame."""
    socket = await socket_for(f"/ws/chat/{slug}/", user)
    return socket, await receive_type(socket, "welcome")


async def assert_quiet(communicator: WebsocketCommunicator) -> None:
    """The socket's next frame, presence aside, answers a ping: nothing else was waiting before it."""
    await communicator.send_json_to({"type": "ping"})
    assert await receive_type(communicator, "pong") == {"type": "pong"}


async def closed_with(communicator: WebsocketCommunicator, wait: float = 10) -> tuple[int, str | None]:
    """Skip any frames until the server closes the socket; its (code, reason)."""
    while True:
        output = await communicator.receive_output(timeout=wait)
        if output["type"] == "websocket.close":
            return output.get("code"), output.get("reason")


async def http(
    method: str, path: str, *, body=None, headers=(), content_type: str = "application/json"
) -> tuple[int, dict, dict[str, str]]:
    """One HTTP request through the full ASGI application: (status, JSON body, headers)."""
    import orjson
    from channels.testing import HttpCommunicator
    from django.db import close_old_connections

    from config.asgi import application

    raw = body if isinstance(body, bytes) else (orjson.dumps(body) if body is not None else b"")
    all_headers = [(b"host", b"localhost"), *headers]
    if raw:
        all_headers.append((b"content-type", content_type.encode()))
    communicator = HttpCommunicator(application, method, path, body=raw, headers=all_headers)
    response = await communicator.get_response(timeout=10)
    # Let Django finish the request (request_finished closes its database connection).
    await communicator.wait(timeout=10)
    # The test's own sync_to_async calls share one thread whose connection no
    # request cycle closes; close it so the test database can be dropped.
    await sync_to_async(close_old_connections)()
    answer = {k.decode().lower(): v.decode() for k, v in response["headers"]}
    is_json = answer.get("content-type", "").startswith("application/json")
    data = orjson.loads(response["body"]) if response["body"] and is_json else {}
    return response["status"], data, answer


async def http_from(
    address: str, method: str, path: str, *, body: bytes = b"", headers=()
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request through the full ASGI application from client `address`: (status, headers, body).

    The scope carries `client` as an ASGI server would (REMOTE_ADDR), which
    `http()`'s HttpCommunicator leaves out: for what depends on the caller's address.
    """
    from channels.testing import ApplicationCommunicator
    from django.db import close_old_connections

    from config.asgi import application

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "headers": [(b"host", b"localhost"), *headers],
        "client": (address, 50000),
        "server": ("127.0.0.1", 8000),
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": body, "more_body": False})
    start = await communicator.receive_output(10)
    content = b""
    while True:
        part = await communicator.receive_output(10)
        content += part.get("body", b"")
        if not part.get("more_body"):
            break
    await communicator.wait(10)
    await sync_to_async(close_old_connections)()
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, content
