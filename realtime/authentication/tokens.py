"""Access tokens: short-lived JWTs for scripts, mobile apps and other origins.

Choices (see docs/protocol.md, "Authentication"):

- HS256 only, pinned when decoding: the `alg` in a token's header is never
  trusted, so `none` and HS/RS confusion are refused by construction.
- `exp`, `iat`, `iss`, `aud` and `sub` are required and checked, with no
  leeway: workers share one clock source, and a leeway would only lengthen
  the life of a stolen token.
- `pwd` stamps the user's password hash, so changing a password revokes every
  token issued before, as Django does for sessions.
- The user must still exist and be active at every verification: a token is
  never trusted for who it names, only for who it was issued to.
- Tokens are stateless; logging out closes sockets but does not revoke a
  token already handed out (it lives at most JWT_LIFETIME_SECONDS).
- Tokens are signed with JWT_SIGNING_KEY and also verify under
  JWT_FALLBACK_KEYS (derived from SECRET_KEY_FALLBACKS when the signing key
  is derived from SECRET_KEY), so a secret-key rotation keeps scripts
  connected until their tokens run out.
"""

from __future__ import annotations

import copy
import hmac
import time
import uuid
from dataclasses import dataclass

import jwt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.utils.crypto import salted_hmac

from realtime.protocol import MAX_TOKEN_LENGTH, CloseReason

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]

# Why a token was refused; also the close reason of a header-token socket.
TOKEN_EXPIRED = CloseReason.TOKEN_EXPIRED
INVALID_TOKEN = CloseReason.INVALID_TOKEN


class InvalidToken(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class IssuedToken:
    access: str
    expires_in: int
    expires_at: int  # epoch seconds


@dataclass(frozen=True)
class VerifiedToken:
    user: AbstractBaseUser
    expires_at: int  # epoch seconds


def _password_stamp(user: AbstractBaseUser, *, key: str | None = None) -> str:
    # An HMAC, not the hash itself: the token is readable by its holder.
    return salted_hmac(
        "realtime.tokens.password",
        user.password or "",
        secret=key or settings.JWT_SIGNING_KEY,
        algorithm="sha256",
    ).hexdigest()[:16]


def issue_token(*, user: AbstractBaseUser) -> IssuedToken:
    """A signed access token for this (active) user."""
    now = int(time.time())
    lifetime = settings.JWT_LIFETIME_SECONDS
    claims = {
        "iss": settings.JWT_ISSUER,
        "aud": settings.JWT_AUDIENCE,
        "sub": str(user.pk),
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
        "pwd": _password_stamp(user),
    }
    access = jwt.encode(claims, settings.JWT_SIGNING_KEY, algorithm=ALGORITHM)
    return IssuedToken(access=access, expires_in=lifetime, expires_at=now + lifetime)


def verify_token(token: str) -> VerifiedToken:
    """The active user a token was issued to, or InvalidToken. Reads the database."""
    answer = verify_tokens([token])[0]
    if isinstance(answer, InvalidToken):
        raise answer
    return answer


def verify_tokens(tokens: list[str]) -> list[VerifiedToken | InvalidToken]:
    """`verify_token` of each token, in order, with one query for all their users."""
    checked: list[tuple[dict, str] | InvalidToken] = []
    for token in tokens:
        try:
            checked.append(_claims(token))
        except InvalidToken as exc:
            checked.append(exc)
    ids = {int(found[0]["sub"]) for found in checked if not isinstance(found, InvalidToken)}
    users = get_user_model().objects.filter(pk__in=ids, is_active=True).in_bulk() if ids else {}
    answers: list[VerifiedToken | InvalidToken] = []
    given: set[int] = set()
    for found in checked:
        if isinstance(found, InvalidToken):
            answers.append(found)
            continue
        claims, key = found
        user = users.get(int(claims["sub"]))
        if user is None or not hmac.compare_digest(
            str(claims.get("pwd", "")), _password_stamp(user, key=key)
        ):
            answers.append(InvalidToken(INVALID_TOKEN))
            continue
        # Each socket gets a user object of its own, as it did when each read its own.
        answers.append(
            VerifiedToken(user=copy.copy(user) if user.pk in given else user, expires_at=claims["exp"])
        )
        given.add(user.pk)
    return answers


def _claims(token: str) -> tuple[dict, str]:
    """A token's checked claims and the key that signed it, or InvalidToken. Reads nothing."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken(INVALID_TOKEN)
    # PyJWT checks the signature before any claim: a token signed under another
    # key fails with InvalidSignatureError whatever its claims.
    for key in (settings.JWT_SIGNING_KEY, *settings.JWT_FALLBACK_KEYS):
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=settings.JWT_AUDIENCE,
                issuer=settings.JWT_ISSUER,
                options={"require": REQUIRED_CLAIMS, "verify_signature": True, "strict_aud": True},
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.ExpiredSignatureError:
            raise InvalidToken(TOKEN_EXPIRED) from None
        except jwt.InvalidTokenError:
            raise InvalidToken(INVALID_TOKEN) from None
        break
    else:
        raise InvalidToken(INVALID_TOKEN)
    sub = claims["sub"]
    if not (isinstance(sub, str) and sub.isascii() and sub.isdigit()) or not isinstance(claims["exp"], int):
        raise InvalidToken(INVALID_TOKEN)
    return claims, key
