"""The kit's fixtures and the objects they hand to tests (see the package docstring)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from realtime.launcher import Worker, database_url

# How long a kit helper waits for a frame, a push or a server before failing. Generous on purpose:
# it bounds a hang, it does not measure speed (a CI machine may be busy).
WAIT = 10.0
ORIGIN = "http://localhost"


# --- A socket through the real ASGI application -------------------------------------------


class RelaySocket:
    """One open socket, its `welcome` frame already read."""

    def __init__(self, communicator: WebsocketCommunicator, welcome: dict[str, Any]) -> None:
        self.communicator = communicator
        self.welcome = welcome

    async def send(self, frame: dict[str, Any]) -> None:
        await self.communicator.send_json_to(frame)

    async def receive(self, kind: str | None = None, *, wait: float = WAIT) -> dict[str, Any]:
        """The next frame (of type `kind`, asserted when given).

        `presence` frames come on the worker's timer, not in step with anything a test does, so
        they are passed over unless `kind` is "presence".
        """
        while True:
            frame = await self.communicator.receive_json_from(timeout=wait)
            if frame.get("type") != "presence" or kind == "presence":
                assert kind is None or frame.get("type") == kind, frame
                return frame

    async def closed(self, *, wait: float = WAIT) -> int | None:
        """Skip frames until the server closes the socket; its close code."""
        while True:
            output = await self.communicator.receive_output(timeout=wait)
            if output["type"] == "websocket.close":
                return output.get("code")


def _session_cookie(user) -> str:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


@pytest.fixture
async def relay_socket(transactional_db) -> AsyncIterator:
    """`await relay_socket(path, user)`: a logged-in socket on any endpoint, `welcome` read."""
    from channels.routing import get_default_application

    application = get_default_application()
    opened: list[WebsocketCommunicator] = []

    async def open_socket(path: str, user, *, origin: str = ORIGIN) -> RelaySocket:
        cookie = await sync_to_async(_session_cookie)(user)
        headers = [
            (b"origin", origin.encode()),
            (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()),
        ]
        communicator = WebsocketCommunicator(application, path, headers=headers)
        opened.append(communicator)
        connected, _ = await communicator.connect(timeout=WAIT)
        assert connected, f"handshake to {path} refused"
        socket = RelaySocket(communicator, {})
        socket.welcome = await socket.receive("welcome")
        return socket

    yield open_socket
    for communicator in opened:
        try:
            await communicator.disconnect()
        except (Exception, asyncio.CancelledError):  # noqa: S110 - already closed by the server or the test
            pass
    await close_loop_resources()


async def close_loop_resources() -> None:
    """Stop this test loop's hub and readiness probe: the loop ends with the test."""
    from realtime.fanout.hub import close_hub
    from realtime.operations.health import close_readiness_echo

    for closing in (close_hub(), close_readiness_echo()):
        if closing is not None:
            await closing


# --- What a write pushes ------------------------------------------------------------------


class Push(NamedTuple):
    """One event as a group's sockets get it: `group` (e.g. `user_group(id)`) and the event."""

    group: str
    event: dict[str, Any]


class Pushes:
    """Every event sent to the channel layer since the fixture started, in order."""

    def __init__(self) -> None:
        self.all: list[Push] = []

    def record(self, message: dict[str, Any]) -> None:
        from realtime.fanout.hub import for_group
        from realtime.protocol import COMMITTED_AT, LayerMessage

        def clean(event: dict[str, Any]) -> dict[str, Any]:
            # The commit time is push latency bookkeeping, not part of what a socket is sent.
            return {key: value for key, value in event.items() if key != COMMITTED_AT}

        if message.get("type") == LayerMessage.HUB_EVENT:
            self.all.append(Push(message["group"], clean(message["event"])))
        elif message.get("type") == LayerMessage.HUB_BATCH:
            # One message for many groups: each group's own event, as each worker's hub builds it.
            for group, fields in message["recipients"]:
                self.all.append(Push(group, clean(for_group(message["event"], fields))))

    def to_group(self, group: str) -> list[dict[str, Any]]:
        return [push.event for push in self.all if push.group == group]

    def to_user(self, user) -> list[dict[str, Any]]:
        """Events for `user`'s inbox sockets (notifications, read state)."""
        from realtime.protocol import user_group

        return self.to_group(user_group(user.pk))

    def to_room(self, room) -> list[dict[str, Any]]:
        """Events for the sockets in chat `room` (messages, deletions, typing)."""
        from realtime.protocol import room_group

        return self.to_group(room_group(room.pk))

    async def wait(self, count: int = 1, *, group: str | None = None, wait: float = WAIT) -> list[Push]:
        """At least `count` pushes (to `group`, when given), polled for up to `wait` seconds.

        Needed in async tests only: a write made through `sync_to_async` hands its pushes to the
        test's event loop, which sends them once the test awaits something. In sync code they
        have been sent when the write returns.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            matching = [push for push in self.all if group is None or push.group == group]
            if len(matching) >= count:
                return matching
            assert loop.time() < deadline, f"{len(matching)} of {count} pushes within {wait}s"
            await asyncio.sleep(0.01)  # polling with a bound, not synchronising


@pytest.fixture
def relay_pushes(transactional_db, monkeypatch) -> Iterator[Pushes]:
    """Records what every write pushes after commit, at the channel layer's door; still delivered."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    pushes = Pushes()
    send = layer.group_send

    async def recording_send(group: str, message: dict[str, Any]) -> None:
        pushes.record(message)
        await send(group, message)

    monkeypatch.setattr(layer, "group_send", recording_send)
    yield pushes


# --- A live server ------------------------------------------------------------------------


def server_env() -> dict[str, str]:
    """The environment of a worker that shares this test's database and channel layer."""
    from django.db import connection

    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(connection.settings_dict),
        # Redis names as this process has them (the namespace would otherwise follow the test
        # database's name, and a test run's own prefixes would be lost).
        REDIS_NAMESPACE=settings.REDIS_NAMESPACE,
        CHANNEL_LAYER_PREFIX=settings.CHANNEL_LAYER_PREFIX,
        PRESENCE_KEY_PREFIX=settings.PRESENCE_KEY_PREFIX,
        CHAT_RATE_KEY_PREFIX=settings.CHAT_RATE_KEY_PREFIX,
        DJANGO_SECRET_KEY=settings.SECRET_KEY,
        DJANGO_DEBUG="false",
        DJANGO_SECURE_COOKIES="false",  # plain http on loopback
        WHITENOISE_USE_FINDERS="true",  # static files without collectstatic
        DATABASE_CONN_MAX_AGE="0",  # no connection outlives a test's database
        DRAIN_GRACE_SECONDS="0.2",
        PYTHONUNBUFFERED="1",
    )
    return env


class RelayServer:
    """`python -m realtime.serve` on a free loopback port (realtime.launcher); its output is in `log_path`."""

    def __init__(self, log_path: Path) -> None:
        application = ":".join(settings.ASGI_APPLICATION.rsplit(".", 1))
        self.worker = Worker(
            "realtime.serve", app=application, env=server_env(), log_path=log_path, cwd=settings.BASE_DIR
        )
        self.port = self.worker.port
        self.url = self.worker.url
        self.log_path = log_path

    @property
    def process(self) -> subprocess.Popen | None:
        return self.worker.process

    def ws_url(self, path: str) -> str:
        return f"{self.worker.ws}{path}"

    async def auth_headers(self, username: str, password: str) -> dict[str, str]:
        """`Authorization: Bearer <token>` from this server's `POST /api/token/`, for a script's socket."""
        import json
        import urllib.request

        def fetch() -> dict[str, str]:
            body = json.dumps({"username": username, "password": password}).encode()
            request = urllib.request.Request(f"{self.url}/api/token/", body)  # noqa: S310 - http, ours
            request.add_header("Content-Type", "application/json")
            with urllib.request.urlopen(request, timeout=WAIT) as answer:  # noqa: S310 - our own http URL
                return {"Authorization": f"Bearer {json.load(answer)['access']}"}

        return await asyncio.to_thread(fetch)

    async def start(self, *, wait: float = 30.0) -> None:
        """Start it and wait until its /readyz answers (database and channel layer reached)."""
        await self.worker.astart(wait)

    async def stop(self) -> None:
        """SIGTERM (the worker drains), then SIGKILL if it has not exited within 15 s."""
        await self.worker.astop()


@pytest.fixture
async def relay_server(transactional_db, tmp_path) -> AsyncIterator[RelayServer]:
    """A worker on a free loopback port with this test's database and channel layer; stopped after."""
    server = RelayServer(tmp_path / "relay-server.log")
    await server.start()
    yield server
    await server.stop()
