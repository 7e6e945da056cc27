"""Shared fixtures: personas, logged-in sockets through the real ASGI app.

Tests run against whatever DATABASE_URL and REDIS_URL say. `make test` in CI
points them at PostgreSQL and Redis; there, a test marked `redis` or
`postgres` fails when its service is missing instead of being skipped.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
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

# The test kit a project's own tests use (README, "Testing your code"); its fixtures are `relay_*`.
pytest_plugins = ["relay_testing"]


def pytest_configure(config):
    # Socket handlers reach the database from a thread pool; persistent
    # connections there would outlive the test database.
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Names of this run's own in a shared Redis: parallel runs, and a `make run`
    # on the same Redis, never hear each other or touch each other's keys. The
    # run's namespace (realtime/redis_client.py) is in every one of them.
    from realtime.redis_client import layer_prefix

    run = f"test-{uuid.uuid4().hex[:8]}"
    settings.REDIS_NAMESPACE = run
    layer = settings.CHANNEL_LAYERS["default"]
    if "hosts" in layer.get("CONFIG", {}):  # a Redis layer (core or pub/sub), not the in-memory one
        layer["CONFIG"]["prefix"] = layer_prefix(settings.CHANNEL_LAYER_PREFIX, run)
        # Each layer connection names itself (CLIENT SETNAME), so a test that
        # cuts them, as a Redis restart would, finds its own and no one else's.
        layer["CONFIG"]["hosts"] = [{**host, "client_name": run} for host in layer["CONFIG"]["hosts"]]
    settings.PRESENCE_KEY_PREFIX = f"{run}-presence"
    settings.CHAT_RATE_KEY_PREFIX = f"{run}-rate"
    settings.WS_SOCKETS_KEY_PREFIX = f"{run}-sockets"
    settings.LOGIN_THROTTLE_KEY_PREFIX = f"{run}-login"
    settings.LIVE_KEY_PREFIX = f"{run}-live"


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
    """Each test has its own event loop; stop that loop's hub and /readyz echo before it ends."""
    yield
    from realtime.fanout.hub import close_hub
    from realtime.operations.health import close_readiness_echo

    for closing in (close_hub(), close_readiness_echo()):
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
    # The run's namespace and names (see pytest_configure), not the namespace the
    # test database's name would give: the settings add it to each name.
    env["REDIS_NAMESPACE"] = settings.REDIS_NAMESPACE
    env["CHANNEL_LAYER_PREFIX"] = settings.CHANNEL_LAYER_PREFIX
    env["PRESENCE_KEY_PREFIX"] = settings.PRESENCE_KEY_PREFIX
    env["CHAT_RATE_KEY_PREFIX"] = settings.CHAT_RATE_KEY_PREFIX
    env["WS_SOCKETS_KEY_PREFIX"] = settings.WS_SOCKETS_KEY_PREFIX
    env["LOGIN_THROTTLE_KEY_PREFIX"] = settings.LOGIN_THROTTLE_KEY_PREFIX
    env["LIVE_KEY_PREFIX"] = settings.LIVE_KEY_PREFIX
    env.setdefault("DJANGO_SECRET_KEY", settings.SECRET_KEY)
    return env


async def run_manage(*args: str, env: dict[str, str] | None = None) -> str:
    """Run `manage.py` in a separate process (default: on this test's database); returns its stdout."""
    import asyncio
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "manage.py",
        *args,
        env=env if env is not None else subprocess_env(),
        cwd=str(settings.BASE_DIR),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


# --- Real browser against a real server ------------------------------------------------
# Browser tests (marked `browser`) drive Debian's Chromium through Playwright's async API
# against daphne in a subprocess that shares this test's database and channel layer.
# pytest-django's live_server is WSGI and cannot serve websockets, hence daphne.

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
ARTIFACTS = settings.BASE_DIR / "test-artifacts"
SCREENSHOTS = settings.BASE_DIR / "docs" / "screenshots"


async def tcp_probe(port: int, request: bytes, *, seconds: float = 2.0) -> bytes | None:
    """The first line a loopback server answers to `request`, or None if it does not (yet)."""
    import asyncio

    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), seconds)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), seconds)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()


async def stop_process(process) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 15 s."""
    import asyncio

    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 15)
    except TimeoutError:
        process.kill()
        await process.wait()


def free_port() -> int:
    """A free loopback port from the kernel's ephemeral range (never 8000 or 8100-8104)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LiveServer:
    """A worker (`python -m realtime.serve`, daphne with a graceful drain) on one loopback port.

    It can be stopped (SIGTERM: open sockets get 1012) and started again on the same port.
    """

    def __init__(self, env: dict[str, str], log_name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log_path = ARTIFACTS / f"{log_name}.server.log"
        self.process = None
        self.paused = False

    async def start(self, wait: float = 30) -> None:
        import asyncio
        import sys

        assert self.process is None, "already running"
        ARTIFACTS.mkdir(exist_ok=True)
        self._log = log = open(self.log_path, "ab")  # noqa: ASYNC230 - a local file, handed to the child
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "realtime.serve",  # daphne with the graceful drain: SIGTERM closes sockets with 1012
            "-b",
            "127.0.0.1",
            "-p",
            str(self.port),
            "config.asgi:application",
            env=self.env,
            cwd=str(settings.BASE_DIR),
            stdout=log,
            stderr=log,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not await self._healthy():
            if self.process.returncode is not None:
                raise RuntimeError(f"daphne exited with {self.process.returncode}; see {self.log_path}")
            if loop.time() > deadline:
                await self.stop()
                raise RuntimeError(f"daphne did not answer within {wait}s; see {self.log_path}")
            await asyncio.sleep(0.1)  # polling for readiness, not synchronising a test

    async def _healthy(self) -> bool:
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        status = await tcp_probe(self.port, request, seconds=5)
        return status is not None and b" 200 " in status

    async def stop(self) -> None:
        import signal

        process, self.process = self.process, None
        if process is None:
            return
        if self.paused:
            process.send_signal(signal.SIGCONT)
            self.paused = False
        await stop_process(process)
        self._log.close()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): its sockets stay open but nothing answers."""
        import signal

        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        import signal

        self.process.send_signal(signal.SIGCONT)
        self.paused = False


def server_env(tag: str) -> dict[str, str]:
    env = subprocess_env()
    env.update(
        DJANGO_DEBUG="false",
        DJANGO_SECURE_COOKIES="false",  # plain http on loopback
        WHITENOISE_USE_FINDERS="true",  # static files without collectstatic
        DATABASE_CONN_MAX_AGE="0",
        # Keys of this test's own in a shared Redis (presence, rate limits).
        PRESENCE_KEY_PREFIX=f"test-presence-{tag}",
        CHAT_RATE_KEY_PREFIX=f"test-rate-{tag}",
        DRAIN_GRACE_SECONDS="0.2",  # a test restart need not wait for a proxy to notice
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
async def live_server_asgi(transactional_db, request):
    """A daphne subprocess on a free loopback port, stopped at teardown.

    Settings of its own come as an indirect parameter: a dict of environment variables.
    """
    tag = uuid.uuid4().hex[:10]
    env = {**server_env(tag), **getattr(request, "param", {})}
    server = LiveServer(env, log_name=request.node.name.replace("/", "_")[:80])
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def browser():
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=15_000)  # a restart or a reconnect takes a few seconds

    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - once per test, before any I/O matters
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


# Every document reports each Content-Security-Policy violation to the test (before any page
# script runs; Playwright's init scripts and bindings are not subject to the page's policy).
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  const what = `${e.effectiveDirective} blocked ${e.blockedURI || "inline"}`;
  window.__relayCspViolation(`${what} on ${e.documentURI}`);
});
"""


class BrowserUser:
    """One browser context logged in as one user; records page errors, CSP violations and dialogs."""

    def __init__(self, context, user) -> None:
        self.context = context
        self.user = user
        self.errors: list[str] = []
        self.csp_violations: list[str] = []
        self.dialogs: list[str] = []

    async def watch_csp(self) -> None:
        await self.context.expose_binding(
            "__relayCspViolation", lambda _source, text: self.csp_violations.append(text)
        )
        await self.context.add_init_script(REPORT_CSP_VIOLATIONS)

    def _console(self, message) -> None:
        # Chromium also reports violations (and a policy it cannot parse) on the console.
        if "Content Security Policy" in message.text:
            self.csp_violations.append(f"console: {message.text}")

    async def page(self, path: str = "/"):
        page = await self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._console)

        async def dismiss(dialog):
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            await dialog.dismiss()

        page.on("dialog", dismiss)
        await page.goto(path)
        return page


@pytest.fixture
async def browser_as(browser, live_server_asgi):
    """`await browser_as(user)`: a fresh context with that user's session cookie."""
    users: list[BrowserUser] = []

    async def open_as(user=None, *, socket_options: dict | None = None) -> BrowserUser:
        import json

        context = await browser.new_context(
            base_url=live_server_asgi.url, viewport={"width": 1100, "height": 720}
        )
        context.set_default_timeout(15_000)
        if socket_options:
            await context.add_init_script(f"window.RELAY_SOCKET_OPTIONS = {json.dumps(socket_options)};")
        if user is not None:
            key = await database_sync_to_async(session_cookie)(user)
            await context.add_cookies(
                [{"name": settings.SESSION_COOKIE_NAME, "value": key, "url": live_server_asgi.url}]
            )
        browser_user = BrowserUser(context, user)
        await browser_user.watch_csp()
        users.append(browser_user)
        return browser_user

    yield open_as
    for browser_user in users:
        await browser_user.context.close()
    errors = [error for u in users for error in u.errors]
    assert not errors, f"JavaScript errors on the pages: {errors}"
    violations = [violation for u in users for violation in u.csp_violations]
    assert not violations, f"Content-Security-Policy violations on the pages: {violations}"


async def save_screenshot(page, name: str) -> None:
    """A test artifact in test-artifacts/; with UPDATE_SCREENSHOTS=1 also the README's copy in docs/."""
    import shutil

    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(target))
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, SCREENSHOTS / f"{name}.png")


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

    from realtime.authentication.tokens import _password_stamp

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


def session_headers(user, *, csrf: bool = True) -> list[tuple[bytes, bytes]]:
    """Cookie headers of a logged-in browser; with the matching X-CSRFToken when `csrf`."""
    secret = "a" * 32
    cookie = f"{settings.SESSION_COOKIE_NAME}={session_cookie(user)}; {settings.CSRF_COOKIE_NAME}={secret}"
    headers = [(b"cookie", cookie.encode())]
    if csrf:
        headers.append((b"x-csrftoken", secret.encode()))
    return headers


@pytest.fixture(scope="session", autouse=True)
def _connections_closed_before_the_test_database_goes(django_db_setup):
    """Close what test threads left open, so pytest-django can drop the test database.

    Tests reach the database from threads of their own: asgiref's `sync_to_async`
    thread and the socket handlers' lanes (realtime/db.py), which keep their
    connections between calls. Torn down before `django_db_setup`, which
    drops the database.
    """
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    from realtime import db

    asyncio.run(sync_to_async(connections.close_all)())
    db.close_connections()
