"""POST /api/token/ and bearer authentication on the JSON API, through the full ASGI application."""

from __future__ import annotations

import time

import jwt
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from notifications import services
from realtime.authentication.tokens import verify_token
from testsupport.asgi import http
from testsupport.auth import DEMO_PASSWORD, make_token, session_headers

pytestmark = pytest.mark.django_db(transaction=True)

cookies = sync_to_async(session_headers)


def bearer(token: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {token}".encode())


async def test_token_for_credentials(alice):
    """Username and password get a Bearer token for that user, valid for JWT_LIFETIME_SECONDS."""
    status, body, headers = await http(
        "POST", "/api/token/", body={"username": "alice", "password": DEMO_PASSWORD}
    )
    assert status == 200
    assert set(body) == {"access", "token_type", "expires_in"}
    assert (body["token_type"], body["expires_in"]) == ("Bearer", settings.JWT_LIFETIME_SECONDS)
    assert headers["cache-control"] == "no-store"
    verified = await sync_to_async(verify_token)(body["access"])
    assert verified.user.pk == alice.pk
    header = jwt.get_unverified_header(body["access"])
    claims = jwt.decode(body["access"], options={"verify_signature": False})
    assert header["alg"] == "HS256"
    assert claims["sub"] == str(alice.pk)
    assert claims["exp"] - claims["iat"] == settings.JWT_LIFETIME_SECONDS
    assert (claims["iss"], claims["aud"]) == (settings.JWT_ISSUER, settings.JWT_AUDIENCE)


async def test_token_for_wrong_password_is_401(alice):
    """A wrong password, an unknown user and an inactive user all get 401 invalid_credentials."""
    for username, password in (("alice", "wrong"), ("nobody", DEMO_PASSWORD)):
        status, body, _ = await http("POST", "/api/token/", body={"username": username, "password": password})
        assert (status, body["error"]) == (401, "invalid_credentials")
    alice.is_active = False
    await alice.asave(update_fields=["is_active"])
    status, body, _ = await http("POST", "/api/token/", body={"username": "alice", "password": DEMO_PASSWORD})
    assert (status, body["error"]) == (401, "invalid_credentials")


async def test_token_request_with_bad_fields_is_400(alice):
    """Credentials of the wrong type get 400 naming the field."""
    status, body, _ = await http("POST", "/api/token/", body={"username": "alice", "password": 123})
    assert (status, body["error"]) == (400, "invalid_message")
    assert set(body["detail"]) == {"password"}


async def test_token_for_a_session_with_csrf(alice):
    """A logged-in session posting an empty body with its CSRF token gets a token for itself."""
    status, body, _ = await http("POST", "/api/token/", headers=await cookies(alice))
    assert status == 200
    assert (await sync_to_async(verify_token)(body["access"])).user.pk == alice.pk


async def test_token_for_a_session_without_csrf_is_403(alice):
    """The session path needs CSRF: without the header it is refused."""
    status, body, _ = await http("POST", "/api/token/", headers=await cookies(alice, csrf=False))
    assert (status, body["error"]) == (403, "forbidden")


async def test_token_without_credentials_is_401(db):
    """No credentials and no session: 401."""
    status, body, _ = await http("POST", "/api/token/")
    assert (status, body["error"]) == (401, "not_authenticated")


async def test_a_token_cannot_renew_itself(alice):
    """A bearer token posted to /api/token/ with an empty body does not get a fresh one."""
    token = make_token(alice)
    status, body, _ = await http("POST", "/api/token/", headers=[bearer(token)])
    assert (status, body["error"]) == (401, "not_authenticated")


async def test_token_endpoint_is_post_only(db):
    """GET /api/token/ is 405."""
    status, _, _ = await http("GET", "/api/token/")
    assert status == 405


async def test_bearer_reads_notifications(alice, bob):
    """GET /api/notifications/ with a bearer token lists the token user's inbox."""
    mine = await sync_to_async(services.notify)(users=alice, title="for alice")
    await sync_to_async(services.notify)(users=bob, title="for bob")
    status, body, _ = await http("GET", "/api/notifications/", headers=[bearer(make_token(alice))])
    assert status == 200
    assert [n["id"] for n in body["results"]] == [mine[0].id]


async def test_bearer_post_needs_no_csrf(alice):
    """A bearer POST is CSRF-exempt: mark-all-read works without a CSRF token."""
    await sync_to_async(services.notify)(users=alice, title="x")
    status, body, _ = await http(
        "POST", "/api/notifications/read/", body={"all": True}, headers=[bearer(make_token(alice))]
    )
    assert (status, body) == (200, {"unread": 0})


async def test_session_post_still_needs_csrf(alice):
    """A session POST to the API without the CSRF header is refused; with it, it works."""
    status, body, _ = await http(
        "POST", "/api/notifications/read/", body={"all": True}, headers=await cookies(alice, csrf=False)
    )
    assert (status, body["error"]) == (403, "forbidden")
    status, _, _ = await http(
        "POST", "/api/notifications/read/", body={"all": True}, headers=await cookies(alice)
    )
    assert status == 200


async def test_bad_bearer_is_401_even_with_a_session(alice):
    """An invalid or expired bearer token is 401 with WWW-Authenticate, never a fallback to the cookie."""
    now = int(time.time())
    for token, reason in (("garbage", "invalid_token"), (make_token(alice, exp=now - 5), "token_expired")):
        status, body, headers = await http(
            "GET", "/api/notifications/unread-count/", headers=[bearer(token), *await cookies(alice)]
        )
        assert (status, body["error"]) == (401, "not_authenticated")
        assert reason in headers["www-authenticate"]


async def test_anonymous_api_request_is_401(db):
    """No credentials on the JSON API: 401."""
    status, body, _ = await http("GET", "/api/notifications/unread-count/")
    assert (status, body["error"]) == (401, "not_authenticated")
