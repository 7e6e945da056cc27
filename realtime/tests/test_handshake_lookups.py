"""Handshake lookups read for many sockets at once answer what Django answers for each one."""

from __future__ import annotations

import asyncio

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import override_settings

from realtime.authentication.sessions import session_user, session_users
from realtime.authentication.tokens import InvalidToken, issue_token, verify_token, verify_tokens
from realtime.protocol import ServerFrame
from testsupport.asgi import receive_type
from testsupport.auth import make_token, session_cookie

pytestmark = pytest.mark.django_db


def answers(keys: list[str]) -> list[int | None]:
    return [user.pk for user in session_users(keys)]


def one_by_one(keys: list[str]) -> list[int | None]:
    return [session_user(key).pk for key in keys]


def test_sessions_of_active_users_read_together_as_django_reads_each(alice, bob):
    """Two users, one with two sessions, a repeated key and an unknown one: the same users, in order."""
    a1, a2, b = session_cookie(alice), session_cookie(alice), session_cookie(bob)
    keys = [a1, b, "x" * 32, a2, a1, "", "short"]
    assert answers(keys) == one_by_one(keys) == [alice.pk, bob.pk, None, alice.pk, alice.pk, None, None]


def test_sessions_read_together_give_each_socket_its_own_user_object(alice):
    """Two sockets of one user never share the user object they hold."""
    key = session_cookie(alice)
    first, second = session_users([key, key])
    assert first == second and first is not second


def test_logged_out_expired_and_deactivated_sessions_find_nobody(alice, bob, carol, make_user):
    """A deleted or expired session, an inactive user and a changed password all read as anonymous."""
    dave = make_user("dave")
    logged_out, expired = session_cookie(alice), session_cookie(bob)
    inactive, changed, kept = session_cookie(carol), session_cookie(dave), session_cookie(alice)
    Session.objects.filter(session_key=logged_out).delete()
    Session.objects.filter(session_key=expired).update(expire_date="2000-01-01T00:00:00Z")
    carol.is_active = False
    carol.save()
    dave.set_password("another horse battery")
    dave.save()
    keys = [logged_out, expired, inactive, changed, kept]
    assert answers(keys) == one_by_one(keys) == [None, None, None, None, alice.pk]


def test_sessions_made_under_a_rotated_secret_key_still_find_their_users(alice, settings):
    """A session hash made under a key now in SECRET_KEY_FALLBACKS verifies, as Django's get_user allows."""
    key = session_cookie(alice)
    with override_settings(SECRET_KEY="rotated-" + "k" * 50, SECRET_KEY_FALLBACKS=[settings.SECRET_KEY]):
        assert answers([key]) == one_by_one([key]) == [alice.pk]
    with override_settings(SECRET_KEY="rotated-" + "k" * 50, SECRET_KEY_FALLBACKS=[]):
        assert answers([key]) == one_by_one([key]) == [None]


def test_sessions_from_a_backend_no_longer_configured_find_nobody(alice):
    """A session whose backend left AUTHENTICATION_BACKENDS reads as anonymous, as Django reads it."""
    key = session_cookie(alice)
    with override_settings(
        AUTHENTICATION_BACKENDS=["realtime.authentication.login_throttle.ThrottleBackend"]
    ):
        assert answers([key]) == one_by_one([key]) == [None]


@override_settings(SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies")
def test_sessions_of_other_engines_are_read_as_the_engine_reads_them(alice):
    """With signed-cookie sessions, the cookie itself names the user, read without the session table."""
    key = session_cookie(alice)
    assert answers([key, "forged"]) == one_by_one([key, "forged"]) == [alice.pk, None]


def test_tokens_verified_together_answer_as_each_verified_alone(alice, bob):
    """Valid, expired, forged, for a deactivated user and repeated: each the same answer, in order."""
    good_a, good_b = issue_token(user=alice).access, issue_token(user=bob).access
    expired = make_token(alice, exp=1, iat=0)
    forged = make_token(alice, key="not-our-key-" + "x" * 40)
    tokens = [good_a, expired, good_b, forged, good_a, "garbage"]
    together = verify_tokens(tokens)
    for token, answer in zip(tokens, together, strict=True):
        try:
            alone = verify_token(token)
        except InvalidToken as exc:
            assert isinstance(answer, InvalidToken) and answer.reason == exc.reason
        else:
            assert not isinstance(answer, InvalidToken)
            assert (answer.user.pk, answer.expires_at) == (alone.user.pk, alone.expires_at)
    assert together[0].user is not together[4].user
    bob.is_active = False
    bob.save()
    assert isinstance(verify_tokens([good_b])[0], InvalidToken)


@pytest.mark.django_db(transaction=True)
async def test_sockets_arriving_together_each_get_their_own_welcome(make_user, socket_for):
    """Twenty users' sockets opened at once, by cookie and by token, each welcome their own user."""
    from asgiref.sync import sync_to_async

    users = [await sync_to_async(make_user)(f"storm{i}") for i in range(20)]

    async def open_one(i: int, user):
        if i % 2:
            token = (await sync_to_async(issue_token)(user=user)).access
            return await socket_for("/ws/notifications/", token=token, origin=None)
        return await socket_for("/ws/notifications/", user)

    sockets = await asyncio.gather(*(open_one(i, user) for i, user in enumerate(users)))
    welcomes = await asyncio.gather(*(receive_type(s, ServerFrame.WELCOME) for s in sockets))
    assert [w["user"]["id"] for w in welcomes] == [user.pk for user in users]
    assert all(w["unread"] == 0 and w["last_id"] is None for w in welcomes)


class _FailingBackend:
    """An authentication backend whose lookup of bob fails (a bug, a directory down)."""

    def get_user(self, user_id):
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.filter(pk=user_id).first()
        if user is not None and user.username == "bob":
            raise RuntimeError("directory unreachable")
        return user


def test_a_backend_failing_for_one_session_fails_only_that_handshake(alice, bob, settings):
    """A custom backend raising for one user: that key gets the error, the others in its batch their users."""
    path = f"{__name__}._FailingBackend"
    settings.AUTHENTICATION_BACKENDS = [path]
    keys = []
    for user in (alice, bob):
        session = SessionStore()
        session.update({"_auth_user_id": str(user.pk), "_auth_user_backend": path})
        session["_auth_user_hash"] = user.get_session_auth_hash()
        session.create()
        keys.append(session.session_key)
    first, second = session_users(keys)
    assert first.pk == alice.pk
    assert isinstance(second, RuntimeError)
