"""Handshake checks for every socket: the Origin rule, then who is calling.

Order matters and is fixed in `socket_stack`: a foreign Origin is refused
before any credential is looked at. Then, in `SocketAuthMiddleware`:

- an `Authorization: Bearer <jwt>` header, when present, decides alone (a bad
  one is never replaced by the cookie);
- otherwise the session cookie is used, but only when the handshake carries
  an allowed Origin (a browser), never from a client that sends no Origin.

Tokens are read from the header or, later, from an `auth` frame; never from
the URL or query string, which end up in server and proxy logs.

The session cookie is read here rather than through Channels'
CookieMiddleware and SessionMiddleware: those keep, for the whole life of
every socket, three more copies of the scope, the parsed cookies, a session
object with its decoded data and a wrapper around `send`, none of which a
socket uses once it knows its user (about 3 KiB per idle socket). The user is
found as Django's `auth.get_user` finds it, with its checks (backend, active
user, session hash against the password, secret-key fallbacks), reading the
session only, for all the handshakes arriving together at once
(realtime.authentication.sessions).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import SplitResult, urlsplit

from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie

from realtime import adapter, db
from realtime.authentication.sessions import session_users
from realtime.authentication.tokens import InvalidToken, verify_tokens
from realtime.handshake_queue import HandshakeQueue
from realtime.operations.errors import UNAVAILABLE_ERRORS, log_unavailable
from realtime.operations.logs import log_event

logger = logging.getLogger("realtime.auth")

verify = db.batched(verify_tokens)


# Sessions of the sockets arriving together are read together (realtime.db.batched).
user_for_session = db.batched(session_users)


def header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


# Visible ASCII only: no spaces, tabs or controls (urlsplit silently drops some of those).
_ORIGIN_CHARACTERS = re.compile(rb"[!-~]+")


def parse_origin(value: bytes) -> SplitResult | None:
    """`value` split as a serialized origin, `scheme://host[:port]` (RFC 6454), or None if it is not one.

    None for anything a browser would not send: userinfo, a path, a query, a
    port that is not a number in 0-65535, an unclosed or invalid IPv6 literal.
    """
    if not _ORIGIN_CHARACTERS.fullmatch(value):
        return None
    try:
        origin = urlsplit(value.decode("ascii"))
        origin.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return None
    if not origin.scheme or not origin.hostname or "@" in origin.netloc:
        return None
    if origin.path or origin.query or origin.fragment:
        return None
    return origin


def bearer_token(value: bytes) -> str | None:
    """The token of an `Authorization: Bearer` value; None for any other scheme.

    Other schemes (such as Basic, sent by a browser behind a password-protected
    proxy) are not ours and are ignored rather than refused.
    """
    scheme, _, token = value.decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


class OriginCheck(OriginValidator):
    """Refuse (HTTP 403) a handshake whose Origin is not allowed.

    Channels' matching rules (`adapter.origin_allowed`: a bare host matches it on any
    scheme and port, `scheme://host[:port]` exactly), with two differences:

    - a handshake with no Origin header passes: scripts and servers send
      none. They may authenticate only by token;
    - an Origin that is not a well-formed origin, or more than one Origin, is
      refused like a foreign one. Channels parses it with urlparse, which
      raises ValueError on `http://[::1` and on a port out of range or not a
      number: the handshake failed with a 500 and a traceback instead.
    """

    async def __call__(self, scope, receive, send):
        origins = [value for key, value in scope.get("headers", ()) if key == b"origin"]
        if not origins or (len(origins) == 1 and self.allowed(origins[0])):
            return await self.application(scope, receive, send)
        # Closing before accepting is answered with 403 by every server. (Channels'
        # WebsocketDenier does the same through a consumer, which on the Redis
        # layer would subscribe a channel for every refused handshake.)
        await receive()  # websocket.connect
        await send({"type": "websocket.close"})

    def allowed(self, value: bytes) -> bool:
        origin = parse_origin(value)
        return origin is not None and adapter.origin_allowed(self, origin)


class SocketAuthMiddleware:
    """Put into the scope `user`, `auth_method` ("session", "token" or None),
    `token_expires_at` (epoch seconds, token sockets only) and `auth_error`
    (a close reason when the handshake's bearer token was refused) and
    `unavailable` (True when the database could not be asked who is calling;
    the consumer then closes the socket with 1011 `unavailable`, as the
    contract says for a backing service being down, where an exception here
    would make daphne answer the handshake with a bare 500)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        scope = dict(scope)
        scope["user"] = AnonymousUser()
        scope["auth_method"] = None
        scope["token_expires_at"] = None
        scope["auth_error"] = None
        scope["unavailable"] = False
        try:
            await self._authenticate(scope)
        except UNAVAILABLE_ERRORS as exc:
            log_unavailable(logger, exc, "socket handshake: backing service unavailable")
            scope["unavailable"] = True
        return await self.inner(scope, receive, send)

    async def _authenticate(self, scope) -> None:
        authorization = header(scope, b"authorization")
        token = bearer_token(authorization) if authorization is not None else None
        if token is not None:
            try:
                verified = await verify(token)
            except InvalidToken as exc:
                scope["auth_error"] = exc.reason
                logger.info("socket handshake token refused reason=%s", exc.reason)
            else:
                scope["user"] = verified.user
                scope["auth_method"] = "token"
                scope["token_expires_at"] = verified.expires_at
        elif header(scope, b"origin") is not None:
            cookie = header(scope, b"cookie")
            session_key = (
                parse_cookie(cookie.decode("latin-1")).get(settings.SESSION_COOKIE_NAME) if cookie else None
            )
            if not session_key:
                return
            user = await user_for_session(session_key)
            if user.is_authenticated:
                scope["user"] = user
                scope["auth_method"] = "session"


async def refuse_unknown_path(scope, receive, send):
    """The last websocket route: a path no endpoint serves is refused at the handshake (HTTP 403).

    Without it Channels' router raises ValueError("No route found"), which
    every server answers with a 500 and logs as a traceback.
    """
    log_event(logger, "socket_refused", reason="no_route", path=scope.get("path", "")[:200])
    await receive()  # websocket.connect
    await send({"type": "websocket.close"})


def socket_stack(inner):
    """The full handshake pipeline around the URL router; outermost, the handshake queue (load shedding)."""
    return HandshakeQueue(OriginCheck(SocketAuthMiddleware(inner), settings.WS_ALLOWED_ORIGINS))
