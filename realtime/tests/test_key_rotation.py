"""A rotated DJANGO_SECRET_KEY: what was signed under the old key keeps people logged in.

A real worker runs with a new DJANGO_SECRET_KEY and this test process's key
(the old one) in DJANGO_SECRET_KEY_FALLBACKS; cookies and tokens are made here,
under the old key, as before a deploy that rotates it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import secrets
import uuid
from http.cookies import SimpleCookie

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from websockets.asyncio.client import connect

from realtime.authentication.tokens import issue_token
from realtime.launcher import Worker
from testsupport.asgi import ORIGIN
from testsupport.auth import session_cookie
from testsupport.processes import server_env

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def rotated_server(django_db_setup, tmp_path_factory):
    """`python -m realtime.serve` with a new secret key and the old one as its fallback; one per module."""
    env = server_env(uuid.uuid4().hex[:10]) | {
        "DJANGO_SECRET_KEY": f"rotated-{secrets.token_urlsafe(40)}",
        "DJANGO_SECRET_KEY_FALLBACKS": settings.SECRET_KEY,
        "WS_AUTH_TIMEOUT_SECONDS": "1",  # a refused cookie shows as a 4401 close soon
    }
    server = Worker("realtime.serve", env=env, log_path=tmp_path_factory.mktemp("rotation") / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def welcome_user(server: Worker, headers: dict[str, str], origin: str | None = ORIGIN) -> str:
    """The username in the welcome of a notifications socket opened with these headers."""
    async with connect(
        f"{server.ws}/ws/notifications/", origin=origin, additional_headers=headers, open_timeout=10
    ) as socket:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
    assert frame["type"] == "welcome", frame
    return frame["user"]["username"]


def page(server: Worker, path: str, session_key: str) -> tuple[int, str | None]:
    """GET a page with this session cookie: its status (no redirect followed) and any new session cookie."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", path, headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={session_key}"})
        response = connection.getresponse()
        response.read()
        cookies = SimpleCookie()
        for header in response.headers.get_all("Set-Cookie") or ():
            cookies.load(header)
        new = cookies.get(settings.SESSION_COOKIE_NAME)
        return response.status, new.value if new is not None else None
    finally:
        connection.close()


async def test_a_session_from_before_the_rotation_stays_logged_in_on_sockets_and_pages(rotated_server, alice):
    """Sockets accept the old session again and again; the next page rotates it to a new cookie."""
    old = await database_sync_to_async(session_cookie)(alice)
    cookie = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={old}"}
    for _ in range(3):  # each handshake leaves the session as it found it
        assert await welcome_user(rotated_server, cookie) == "alice"

    status, new = await asyncio.to_thread(page, rotated_server, "/notifications/", old)
    assert status == 200, "the page sent the user to the login form"
    assert new is not None and new != old, "Django re-signs the session under the new key with a new cookie"

    assert await asyncio.to_thread(page, rotated_server, "/notifications/", new) == (200, None)
    fresh = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={new}"}
    assert await welcome_user(rotated_server, fresh) == "alice"


async def test_a_token_from_before_the_rotation_still_opens_a_socket(rotated_server, alice):
    """A token signed under the old key (the default JWT_SIGNING_KEY derives from it) is still accepted."""
    token = (await database_sync_to_async(issue_token)(user=alice)).access
    assert await welcome_user(rotated_server, {"Authorization": f"Bearer {token}"}, origin=None) == "alice"
