"""Shared fixtures: personas, logged-in sockets through the real ASGI app.

Tests run against whatever DATABASE_URL and REDIS_URL say. `make test` in CI
points them at PostgreSQL and Redis; there, a test marked `redis` or
`postgres` fails when its service is missing instead of being skipped.
"""

from __future__ import annotations

import os
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ORIGIN = "http://localhost:8000"
DEMO_PASSWORD = "correct horse battery"
# How long a test waits for a frame before failing. Generous on purpose: it
# bounds a hang, it does not measure speed (the machine may be busy).
WAIT = 10.0


def pytest_configure(config):
    # Socket handlers reach the database from a thread pool; persistent
    # connections there would outlive the test database.
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A prefix of its own per run: parallel runs on one Redis never hear each other.
    layer = settings.CHANNEL_LAYERS["default"]
    if "redis" in layer["BACKEND"]:
        layer["CONFIG"]["prefix"] = f"test-{uuid.uuid4().hex[:8]}"


def pytest_collection_modifyitems(config, items):
    using_redis = bool(settings.REDIS_URL)
    using_postgres = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
    if IN_CI and not (using_redis and using_postgres):
        raise pytest.UsageError("CI must run with DATABASE_URL (PostgreSQL) and REDIS_URL set")
    for item in items:
        if item.get_closest_marker("redis") and not using_redis:
            item.add_marker(pytest.mark.skip(reason="REDIS_URL is not set"))
        if item.get_closest_marker("postgres") and not using_postgres:
            item.add_marker(pytest.mark.skip(reason="DATABASE_URL is not PostgreSQL"))


@pytest.fixture(autouse=True)
async def _close_hub():
    """Each test has its own event loop; stop that loop's hub before it ends."""
    yield
    from realtime.hub import close_hub

    closing = close_hub()
    if closing is not None:
        await closing


@pytest.fixture
def make_user(db):
    def make(username: str, **extra):
        return get_user_model().objects.create_user(username=username, password=DEMO_PASSWORD, **extra)

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def carol(make_user):
    return make_user("carol")


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


@pytest.fixture
async def socket_for():
    """Open a socket through the full ASGI app; every one is closed at teardown."""
    from config.asgi import application

    opened: list[WebsocketCommunicator] = []

    async def open_socket(
        path: str, user=None, *, origin: str | None = ORIGIN, headers=(), token=None, connect=True
    ):
        all_headers = list(headers)
        if token is not None:
            all_headers.append((b"authorization", f"Bearer {token}".encode()))
        if origin is not None:
            all_headers.append((b"origin", origin.encode()))
        if user is not None:
            key = await sync_to_async(session_cookie)(user)
            all_headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={key}".encode()))
        communicator = WebsocketCommunicator(application, path, headers=all_headers)
        opened.append(communicator)
        if connect:
            connected, _ = await communicator.connect()
            assert connected, "handshake refused"
        return communicator

    yield open_socket
    for communicator in opened:
        try:
            await communicator.disconnect()
        except Exception:  # noqa: S110 - already closed by the server or the test
            pass


async def receive_type(communicator: WebsocketCommunicator, kind: str, wait: float = WAIT):
    """The next frame, asserting its type."""
    frame = await communicator.receive_json_from(timeout=wait)
    assert frame["type"] == kind, frame
    return frame


def subprocess_env() -> dict[str, str]:
    """Environment for a second process that shares this test's database and Redis layer."""
    from django.db import connection

    env = dict(os.environ)
    db = connection.settings_dict
    if db["ENGINE"].endswith("postgresql"):
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    else:
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    layer = settings.CHANNEL_LAYERS["default"]
    if "redis" in layer["BACKEND"]:
        env["CHANNEL_LAYER_PREFIX"] = layer["CONFIG"]["prefix"]
    env.setdefault("DJANGO_SECRET_KEY", settings.SECRET_KEY)
    return env


async def run_manage(*args: str) -> str:
    """Run `manage.py` in a separate process; returns its stdout."""
    import asyncio
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "manage.py",
        *args,
        env=subprocess_env(),
        cwd=str(settings.BASE_DIR),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def closed_with(communicator: WebsocketCommunicator, wait: float = 10) -> tuple[int, str | None]:
    """Skip any frames until the server closes the socket; its (code, reason)."""
    while True:
        output = await communicator.receive_output(timeout=wait)
        if output["type"] == "websocket.close":
            return output.get("code"), output.get("reason")


def make_token(user, *, key: str | None = None, algorithm: str = "HS256", headers=None, **claims) -> str:
    """A token crafted by hand: the service's claims, then any overrides (None removes one)."""
    import time

    import jwt

    from realtime.tokens import _password_stamp

    now = int(time.time())
    payload = {
        "iss": settings.JWT_ISSUER,
        "aud": settings.JWT_AUDIENCE,
        "sub": str(user.pk),
        "iat": now,
        "exp": now + 60,
        "pwd": _password_stamp(user),
    }
    payload.update(claims)
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, key or settings.JWT_SIGNING_KEY, algorithm=algorithm, headers=headers)


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


def session_headers(user, *, csrf: bool = True) -> list[tuple[bytes, bytes]]:
    """Cookie headers of a logged-in browser; with the matching X-CSRFToken when `csrf`."""
    secret = "a" * 32
    cookie = f"{settings.SESSION_COOKIE_NAME}={session_cookie(user)}; {settings.CSRF_COOKIE_NAME}={secret}"
    headers = [(b"cookie", cookie.encode())]
    if csrf:
        headers.append((b"x-csrftoken", secret.encode()))
    return headers
