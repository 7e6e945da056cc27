"""Socket authentication by token, through the full ASGI application."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from asgiref.sync import sync_to_async
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from realtime.authentication.tokens import issue_token
from testsupport.asgi import closed_with, receive_type
from testsupport.auth import make_token

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/notifications/"
issue = sync_to_async(issue_token)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict, payload: dict, signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}.{b64(signature)}"


def claims_for(user, **extra) -> dict:
    token = make_token(user, **extra)
    return jwt.decode(token, options={"verify_signature": False})


async def assert_refused_in_frame(socket_for, token: str, detail: str = "invalid token") -> None:
    """The auth frame is answered not_authenticated and the socket stays unauthenticated."""
    socket = await socket_for(PATH, origin=None)
    await socket.send_json_to({"type": "auth", "token": token, "ref": "a1"})
    error = await receive_type(socket, "error")
    assert (error["code"], error["detail"], error["ref"]) == ("not_authenticated", detail, "a1")
    await socket.send_json_to({"type": "resume", "after": 0})
    assert (await receive_type(socket, "error"))["code"] == "not_authenticated"


async def test_header_token_authenticates(socket_for, alice):
    """A valid Authorization: Bearer header at the handshake opens the socket as its user."""
    token = (await issue(user=alice)).access
    socket = await socket_for(PATH, origin=None, token=token)
    welcome = await receive_type(socket, "welcome")
    assert welcome["user"] == {"id": alice.id, "username": "alice"}


async def test_first_frame_token_authenticates(socket_for, alice):
    """An auth frame with a valid token, sent first, opens the socket as its user."""
    token = (await issue(user=alice)).access
    socket = await socket_for(PATH, origin=None)
    await socket.send_json_to({"type": "auth", "token": token})
    assert (await receive_type(socket, "welcome"))["user"]["id"] == alice.id


async def test_no_token_within_the_deadline_closes_4401(socket_for, settings):
    """A token client that sends nothing is closed 4401 not_authenticated at the deadline."""
    settings.WS_AUTH_TIMEOUT_SECONDS = 0.2
    socket = await socket_for(PATH, origin=None)
    assert await closed_with(socket) == (4401, "not_authenticated")


async def test_expired_token_in_the_header_closes_at_once(socket_for, alice):
    """An expired header token closes the socket 4401 token_expired without waiting for the deadline."""
    now = int(time.time())
    socket = await socket_for(PATH, origin=None, token=make_token(alice, iat=now - 120, exp=now - 60))
    assert await closed_with(socket) == (4401, "token_expired")


async def test_expired_token_in_a_frame_is_refused(socket_for, alice):
    """An expired token in an auth frame gets not_authenticated; the socket stays unauthenticated."""
    now = int(time.time())
    await assert_refused_in_frame(socket_for, make_token(alice, iat=now - 120, exp=now - 60), "token expired")


async def test_token_signed_with_another_key_is_refused(socket_for, alice):
    """A well-formed token signed with some other HS256 key is refused, in a frame and in the header."""
    forged = make_token(alice, key="another-key-that-is-at-least-32-bytes-long")
    await assert_refused_in_frame(socket_for, forged)
    socket = await socket_for(PATH, origin=None, token=forged)
    assert await closed_with(socket) == (4401, "invalid_token")


async def test_alg_none_token_is_refused(socket_for, alice):
    """A token with alg none and no signature is refused."""
    for alg in ("none", "None", "NONE"):
        await assert_refused_in_frame(socket_for, unsigned({"alg": alg, "typ": "JWT"}, claims_for(alice)))


async def test_rs256_token_is_refused(socket_for, alice):
    """A token signed with RS256 (algorithm switching) is refused although its claims are valid."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    await assert_refused_in_frame(socket_for, make_token(alice, key=private, algorithm="RS256"))


async def test_hs256_signed_with_a_public_key_is_refused(socket_for, alice):
    """HS/RS confusion: an HS256 token whose HMAC key is an RSA public key (PEM) is refused."""
    public_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header, payload = {"alg": "HS256", "typ": "JWT"}, claims_for(alice)
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    await assert_refused_in_frame(socket_for, f"{signing_input}.{b64(signature)}")


async def test_wrong_audience_is_refused(socket_for, alice):
    """A token for another audience is refused."""
    await assert_refused_in_frame(socket_for, make_token(alice, aud="some-other-service"))


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"iss": "someone-else"}, id="wrong-issuer"),
        pytest.param({"exp": None}, id="no-exp"),
        pytest.param({"iat": None}, id="no-iat"),
        pytest.param({"iss": None}, id="no-iss"),
        pytest.param({"aud": None}, id="no-aud"),
        pytest.param({"sub": None}, id="no-sub"),
        pytest.param({"aud": ["relay", "other"]}, id="audience-list"),
        pytest.param({"iat": int(time.time()) + 3600}, id="issued-in-the-future"),
        pytest.param({"sub": "999999"}, id="unknown-user"),
        pytest.param({"pwd": "0000000000000000"}, id="stale-password-stamp"),
    ],
)
async def test_token_with_bad_claims_is_refused(socket_for, alice, claims):
    """Each required claim is required and checked."""
    await assert_refused_in_frame(socket_for, make_token(alice, **claims))


async def test_token_of_an_inactive_user_is_refused(socket_for, alice):
    """A token stops working once its user is deactivated."""
    token = (await issue(user=alice)).access
    alice.is_active = False
    await alice.asave(update_fields=["is_active"])
    await assert_refused_in_frame(socket_for, token)


async def test_password_change_revokes_earlier_tokens(socket_for, alice):
    """A token issued before a password change is refused after it."""
    token = (await issue(user=alice)).access
    await sync_to_async(alice.set_password)("a brand new password")
    await alice.asave(update_fields=["password"])
    await assert_refused_in_frame(socket_for, token)


async def test_token_in_the_query_string_is_ignored(socket_for, alice, settings):
    """A valid token in the URL does not authenticate: the socket is closed at the deadline."""
    settings.WS_AUTH_TIMEOUT_SECONDS = 0.2
    token = (await issue(user=alice)).access
    socket = await socket_for(
        f"{PATH}?token={token}&access_token={token}&authorization=Bearer%20{token}", origin=None
    )
    assert await closed_with(socket) == (4401, "not_authenticated")


async def test_refresh_before_expiry_keeps_the_socket(socket_for, alice):
    """A fresh auth frame for the same user before expiry keeps the socket past the first token's exp."""
    now = int(time.time())
    refreshed = await socket_for(PATH, origin=None, token=make_token(alice, exp=now + 2))
    await receive_type(refreshed, "welcome")
    await refreshed.send_json_to({"type": "auth", "token": make_token(alice, exp=now + 600)})
    # A control socket whose token expires a second after the first one's:
    # once it is closed, the first token has certainly run out.
    control = await socket_for(PATH, origin=None, token=make_token(alice, exp=now + 3))
    await receive_type(control, "welcome")
    assert await closed_with(control) == (4401, "token_expired")
    await refreshed.send_json_to({"type": "ping"})
    assert await refreshed.receive_json_from() == {"type": "pong"}


@pytest.mark.parametrize("how", ["header", "frame"])
async def test_expiry_without_refresh_closes_the_socket(socket_for, alice, how):
    """A token socket is closed 4401 token_expired when its token expires."""
    token = make_token(alice, exp=int(time.time()) + 2)
    if how == "header":
        socket = await socket_for(PATH, origin=None, token=token)
    else:
        socket = await socket_for(PATH, origin=None)
        await socket.send_json_to({"type": "auth", "token": token})
    await receive_type(socket, "welcome")
    assert await closed_with(socket) == (4401, "token_expired")


async def test_refresh_for_a_different_user_is_forbidden(socket_for, alice, bob):
    """An auth frame with another user's token is refused with forbidden; the socket stays Alice's."""
    socket = await socket_for(PATH, origin=None, token=(await issue(user=alice)).access)
    await receive_type(socket, "welcome")
    await socket.send_json_to({"type": "auth", "token": (await issue(user=bob)).access, "ref": "r"})
    assert (await receive_type(socket, "error"))["code"] == "forbidden"
    from notifications.services import notify

    created = await sync_to_async(notify)(users=alice, title="still alice's")
    assert (await receive_type(socket, "notification"))["notification"]["id"] == created[0].id


async def test_invalid_refresh_leaves_the_socket_open(socket_for, alice):
    """A bad token in a refresh is answered not_authenticated and the socket keeps working."""
    socket = await socket_for(PATH, origin=None, token=(await issue(user=alice)).access)
    await receive_type(socket, "welcome")
    await socket.send_json_to({"type": "auth", "token": "not.a.token"})
    assert (await receive_type(socket, "error"))["code"] == "not_authenticated"
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from() == {"type": "pong"}


async def test_foreign_origin_is_refused_even_with_a_valid_token(socket_for, alice):
    """A handshake from another site is refused (403) whatever its credentials, a token included."""
    token = (await issue(user=alice)).access
    socket = await socket_for(PATH, alice, origin="https://evil.example", token=token, connect=False)
    connected, _ = await socket.connect()
    assert not connected


async def test_foreign_origin_with_a_valid_cookie_is_refused(socket_for, alice):
    """A handshake from another site with a valid session cookie is refused at the handshake."""
    socket = await socket_for(PATH, alice, origin="https://evil.example", connect=False)
    connected, _ = await socket.connect()
    assert not connected


async def test_no_origin_with_only_a_cookie_is_refused(socket_for, alice, settings):
    """A client with no Origin cannot use the session cookie: closed 4401 at the deadline."""
    settings.WS_AUTH_TIMEOUT_SECONDS = 0.2
    socket = await socket_for(PATH, alice, origin=None)
    assert await closed_with(socket) == (4401, "not_authenticated")


async def test_bearer_header_decides_over_the_cookie(socket_for, alice, bob):
    """With both a cookie and a bearer header, the token's user is the socket's user."""
    socket = await socket_for(PATH, alice, token=(await issue(user=bob)).access)
    assert (await receive_type(socket, "welcome"))["user"]["username"] == "bob"


async def test_other_authorization_schemes_are_ignored(socket_for, alice):
    """A Basic header (a password-protected proxy) does not stop a browser's cookie login."""
    socket = await socket_for(PATH, alice, headers=[(b"authorization", b"Basic dXNlcjpwYXNz")])
    assert (await receive_type(socket, "welcome"))["user"]["username"] == "alice"
