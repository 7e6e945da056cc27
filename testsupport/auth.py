"""Who a test is: the personas' password, a logged-in browser's cookies and headers, hand-made tokens."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

DEMO_PASSWORD = "correct horse battery"


def create_user(username: str, **extra):
    """A user with the personas' password (`make_user`, `alice`, `bob`, `carol`)."""
    return get_user_model().objects.create_user(username=username, password=DEMO_PASSWORD, **extra)


def session_cookie(user) -> str:
    """The session key of a browser logged in as `user`."""
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def session_headers(user, *, csrf: bool = True) -> list[tuple[bytes, bytes]]:
    """Cookie headers of a logged-in browser; with the matching X-CSRFToken when `csrf`."""
    secret = "a" * 32
    cookie = f"{settings.SESSION_COOKIE_NAME}={session_cookie(user)}; {settings.CSRF_COOKIE_NAME}={secret}"
    headers = [(b"cookie", cookie.encode())]
    if csrf:
        headers.append((b"x-csrftoken", secret.encode()))
    return headers


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
