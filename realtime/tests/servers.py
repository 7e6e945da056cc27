"""Helpers for tests that run real servers in subprocesses on loopback ports."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request

from channels.db import database_sync_to_async
from django.conf import settings

from conftest import ORIGIN, session_cookie

APP = "config.asgi:application"
# The servers the project runs under (arguments after `python`); {port} is filled in.
SERVERS = {
    "daphne": ["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", APP],
    "realtime.serve": ["-m", "realtime.serve", "--bind", "127.0.0.1", "--port", "{port}", APP],
    "uvicorn-websockets": [
        "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", "{port}", "--ws", "websockets",
    ],
    "uvicorn-websockets-sansio": [
        "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", "{port}", "--ws", "websockets-sansio",
    ],
}  # fmt: skip


def server_argv(server: str, port: int) -> list[str]:
    return [arg.format(port=port) for arg in SERVERS[server]]


def free_port() -> int:
    """A loopback port free right now (from the ephemeral range, away from fixed ones)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback test URL
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def wait_ready(url: str, *, seconds: float = 30.0, process=None) -> None:
    """Poll `url` (a /readyz) until it answers 200; bounded, fails with the last answer."""
    deadline = time.monotonic() + seconds
    last: object = None
    while time.monotonic() < deadline:
        if process is not None and process.returncode is not None:
            raise AssertionError(f"server exited with {process.returncode} before it was ready")
        try:
            status, body = await asyncio.to_thread(http_get, url, 1.0)
            if status == 200:
                return
            last = (status, body)
        except OSError as exc:
            last = exc
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} not ready after {seconds}s: {last!r}")


async def browser_socket(url: str, user):
    """A WebSocket to a running server, authenticated like a browser (session cookie + Origin)."""
    from websockets.asyncio.client import connect

    # database_sync_to_async closes its connection after, so none outlives the test database.
    key = await database_sync_to_async(session_cookie)(user)
    return await connect(
        url,
        origin=ORIGIN,
        additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={key}"},
        open_timeout=10,
    )


async def token_socket(url: str, token: str):
    """A WebSocket to a running server, authenticated like a script (bearer header, no Origin)."""
    from websockets.asyncio.client import connect

    return await connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10)


async def receive_json(ws, kind: str, wait: float = 10.0) -> dict:
    frame = json.loads(await asyncio.wait_for(ws.recv(), wait))
    assert frame["type"] == kind, frame
    return frame
