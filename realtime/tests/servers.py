"""Helpers for tests that run real servers in subprocesses on loopback ports."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from channels.db import database_sync_to_async
from django.conf import settings

from conftest import ORIGIN, session_cookie

APP = "config.asgi:application"
# The servers the project runs under (arguments after `python`); {port} is filled in.
SERVERS = {
    "daphne": ["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", APP],
    "realtime.serve": ["-m", "realtime.serve", "--bind", "127.0.0.1", "--port", "{port}", APP],
    # daphne's runserver (daphne is in INSTALLED_APPS); no reloader, so the test's pid is the server's.
    "runserver": ["manage.py", "runserver", "--noreload", "127.0.0.1:{port}"],
    # --no-proxy-headers, as the README says: uvicorn would otherwise take X-Forwarded-For
    # from any loopback peer as the client address (the login throttle's; TRUSTED_PROXIES).
    "uvicorn-websockets": [
        "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", "{port}", "--ws", "websockets",
        "--no-proxy-headers",
    ],
    "uvicorn-websockets-sansio": [
        "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", "{port}", "--ws", "websockets-sansio",
        "--no-proxy-headers",
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


def get_json_as(base: str, path: str, user) -> tuple[int, dict]:
    """GET `path` on a running server as `user`'s browser session: (status, JSON body)."""
    request = urllib.request.Request(f"{base}{path}")  # noqa: S310 - a loopback test server
    request.add_header("Cookie", f"{settings.SESSION_COOKIE_NAME}={session_cookie(user)}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


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


class ServerProcess:
    """One of SERVERS in a subprocess on a free loopback port, for tests that share it.

    Plain `subprocess`, not asyncio's: a module's tests share it, each on an
    event loop of its own. Its output goes to `log_path`; `log_since(mark)`
    is what it printed after `log_size()` returned `mark`.
    """

    def __init__(self, server: str, env: dict[str, str], log_path: Path) -> None:
        self.server = server
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, *server_argv(server, self.port)],
            env=env,
            cwd=str(settings.BASE_DIR),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, seconds: float = 60.0) -> None:
        """Poll /readyz until it answers 200; bounded, fails with the last answer."""
        deadline = time.monotonic() + seconds
        last: object = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.server} exited with {self.process.returncode}: {self.log()}")
            try:
                last = http_get(f"{self.base}/readyz", 1.0)
                if last[0] == 200:
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.1)  # polling a starting process, not synchronising a test
        raise AssertionError(f"{self.server} not ready after {seconds}s: {last!r}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, mark: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(mark)
            return log.read().decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 15 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@contextlib.contextmanager
def every_server(
    env: dict[str, str] | Callable[[str], dict[str, str]], logs: Path
) -> Iterator[dict[str, ServerProcess]]:
    """Every server of SERVERS started at once on `env` (or `env(name)`), ready; stopped after.

    For a test module's fixture: its tests share the servers, one per launcher.
    """
    started: dict[str, ServerProcess] = {}
    try:
        for name in SERVERS:
            started[name] = ServerProcess(name, env(name) if callable(env) else env, logs / f"{name}.log")
        for server in started.values():
            server.wait_ready()
        yield started
    finally:
        for server in started.values():
            server.stop()


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
