"""Handshake checks for every socket: the Origin rule, then who is calling.

Order matters and is fixed in `socket_stack`: a foreign Origin is refused
before any credential is looked at; the session cookie is used only when the
handshake carries an allowed Origin (a browser), never from a client that
sends no Origin at all.
"""

from __future__ import annotations

import logging

from channels.auth import get_user
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

logger = logging.getLogger("realtime.auth")


def header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


class OriginCheck(OriginValidator):
    """Refuse (HTTP 403) a handshake whose Origin is not allowed.

    Unlike Channels' validator, a handshake with no Origin header passes:
    scripts and servers send none. They may authenticate only by token.
    """

    def valid_origin(self, parsed_origin) -> bool:
        if parsed_origin is None:
            return True
        return self.validate_origin(parsed_origin)


class SocketAuthMiddleware(BaseMiddleware):
    """Put `user` and `auth_method` ("session", or None) into the scope."""

    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        scope["user"] = AnonymousUser()
        scope["auth_method"] = None
        if header(scope, b"origin") is not None:
            user = await get_user(scope)
            if user.is_authenticated:
                scope["user"] = user
                scope["auth_method"] = "session"
        return await super().__call__(scope, receive, send)


def socket_stack(inner):
    """The full handshake pipeline around the URL router."""
    return OriginCheck(
        CookieMiddleware(SessionMiddleware(SocketAuthMiddleware(inner))),
        settings.WS_ALLOWED_ORIGINS,
    )
