"""Clients of servers running in subprocesses on loopback ports (started with `realtime.launcher`).

Sockets logged in like a browser or a script, a raw WebSocket handshake, a
session GET, JSON POSTs (the publish API), a worker's open sockets from
/metrics, and `every_server`: one worker under each launcher of SERVERS for a
module's tests to share.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from channels.db import database_sync_to_async
from django.conf import settings

from realtime.launcher import SERVERS, Worker, http_get
from testsupport.asgi import ORIGIN
from testsupport.auth import session_cookie


def get_json_as(base: str, path: str, user) -> tuple[int, dict]:
    """GET `path` on a running server as `user`'s browser session: (status, JSON body)."""
    request = urllib.request.Request(f"{base}{path}")  # noqa: S310 - a loopback test server
    request.add_header("Cookie", f"{settings.SESSION_COOKIE_NAME}={session_cookie(user)}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def publish(base: str, key: str, path: str, body: dict) -> tuple[int, dict]:
    """POST `body` to a publish API `path` with API key `key`: (status, JSON body)."""
    return post_json(f"{base}{path}", body, authorization=f"Api-Key {key}")


def post_json(url: str, body: dict, *, authorization: str | None = None) -> tuple[int, dict]:
    """(status, JSON body) of a POST; status 0 when the connection itself failed."""
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    request = urllib.request.Request(  # noqa: S310 - loopback
        url, data=json.dumps(body).encode(), method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (OSError, TimeoutError) as exc:
        return 0, {"error": type(exc).__name__}


async def browser_socket(url: str, user):
    """A WebSocket to a running server, authenticated like a browser (session cookie + Origin)."""
    return await (await browser_opening(url, user))


async def browser_opening(url: str, user, *, open_timeout: float = 10):
    """`browser_socket`, not yet opened: await it to open. Its session is made now, so it can
    open while the session table is locked (testsupport.handshakes)."""
    from websockets.asyncio.client import connect

    # database_sync_to_async closes its connection after, so none outlives the test database.
    key = await database_sync_to_async(session_cookie)(user)
    return connect(
        url,
        origin=ORIGIN,
        additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={key}"},
        open_timeout=open_timeout,
    )


async def token_socket(url: str, token: str):
    """A WebSocket to a running server, authenticated like a script (bearer header, no Origin)."""
    from websockets.asyncio.client import connect

    return await connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10)


async def receive_json(ws, kind: str, wait: float = 10.0) -> dict:
    frame = json.loads(await asyncio.wait_for(ws.recv(), wait))
    assert frame["type"] == kind, frame
    return frame


@contextlib.contextmanager
def every_server(
    env: dict[str, str] | Callable[[str], dict[str, str]], logs: Path
) -> Iterator[dict[str, Worker]]:
    """Every launcher of SERVERS started at once on `env` (or `env(name)`), ready; stopped after.

    For a test module's fixture: its tests share the servers, one per launcher.
    """
    started: dict[str, Worker] = {}
    try:
        for name in SERVERS:
            worker = Worker(name, env=env(name) if callable(env) else env, log_path=logs / f"{name}.log")
            started[name] = worker.spawn()
        for worker in started.values():
            worker.wait_ready()
        yield started
    finally:
        # Together: each drains for a moment after SIGTERM, and five one after another add up.
        with ThreadPoolExecutor(max_workers=len(started) or 1) as pool:
            list(pool.map(Worker.stop, started.values()))


async def next_frame(ws, match, wait: float = 10.0) -> dict:
    """The next frame `match` accepts; others (presence, typing) are passed over."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), wait))
        if match(frame):
            return frame


async def post_on_socket(ws, body: str) -> dict:
    """Send a chat `message`; its answer: the stored message pushed back, or the error for it."""
    client_id = str(uuid.uuid4())
    await ws.send(json.dumps({"type": "message", "body": body, "client_id": client_id, "ref": body}))
    return await next_frame(
        ws,
        lambda f: (
            (f["type"] == "message" and f["message"]["client_id"] == client_id)
            or (f["type"] == "error" and f.get("ref") == body)
        ),
    )


def open_sockets(base: str) -> dict[str, float]:
    """`relay_websocket_open` by endpoint, from a worker's /metrics."""
    status, body = http_get(f"{base}/metrics")
    assert status == 200, body
    pattern = r'^relay_websocket_open\{endpoint="(\w+)"\} (\S+)$'
    return {endpoint: float(value) for endpoint, value in re.findall(pattern, body, re.M)}


async def handshake(port: int, path: str, headers: dict[str, str]):
    """Send a WebSocket opening handshake over a raw connection.

    Returns the response's status code and the open (reader, writer), for a
    test that then does what no WebSocket client library would.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return int(head.split(b" ", 2)[1]), reader, writer
