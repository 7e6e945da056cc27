"""API keys: creation, revocation and checking a presented key.

Format: `rk_<prefix>_<secret>`, the prefix 8 hex characters (public, finds
the row, safe to show in the admin and in logs), the secret 256 random bits.

Hashing: HMAC-SHA256 keyed with a key derived from SECRET_KEY, not a password
hasher. A password hasher is slow on purpose, to protect low-entropy human
secrets from guessing; a 256-bit random secret cannot be guessed, so slowness
buys nothing and would cost every publish request a few hundred
milliseconds. The key makes a stolen database dump alone useless for
checking guesses. Keys hashed under a SECRET_KEY_FALLBACKS entry still verify
and are rehashed under the current key on use.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta
from hashlib import sha256

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from realtime.authentication.models import ApiKey

SCHEME = "Api-Key"
PREFIX_BYTES = 4
SECRET_BYTES = 32
# last_used_at is a hint for humans; writing it on every request is not worth a row lock.
LAST_USED_GRANULARITY = timedelta(minutes=1)


def _hash(key: str, secret_key: str) -> str:
    derived = hmac.new(secret_key.encode(), b"relay.api-key-hash", sha256).digest()
    return hmac.new(derived, key.encode(), sha256).hexdigest()


def _parse(key: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "rk" or len(parts[1]) != PREFIX_BYTES * 2 or not parts[2]:
        return None
    if not all(c in "0123456789abcdef" for c in parts[1]):
        return None
    return parts[1]


@transaction.atomic
def create_api_key(*, name: str) -> tuple[ApiKey, str]:
    """A new key; returns the row and the key in clear, which is never stored."""
    name = name.strip()
    if not name:
        raise ValidationError({"name": "required"})
    for _ in range(5):
        prefix = secrets.token_hex(PREFIX_BYTES)
        key = f"rk_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
        try:
            with transaction.atomic():  # a savepoint, so a prefix collision can retry
                row = ApiKey.objects.create(
                    name=name, prefix=prefix, hashed_key=_hash(key, settings.SECRET_KEY)
                )
        except IntegrityError:
            continue
        return row, key
    raise RuntimeError("could not find a free API key prefix")


@transaction.atomic
def revoke_api_keys(*, keys) -> int:
    """Revoke these keys (a queryset or ids); returns how many were still active."""
    ids = list(keys.values_list("pk", flat=True)) if hasattr(keys, "values_list") else list(keys)
    return ApiKey.objects.filter(pk__in=ids, revoked_at__isnull=True).update(revoked_at=timezone.now())


def authenticate_api_key(key: str) -> ApiKey | None:
    """The active key row for a presented key, else None. Checked on every request: no cache,
    so a revocation takes effect on the very next one."""
    prefix = _parse(key)
    if prefix is None:
        return None
    row = ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).first()
    if row is None:
        return None
    current = _hash(key, settings.SECRET_KEY)
    if hmac.compare_digest(current, row.hashed_key):
        rehash = False
    elif any(hmac.compare_digest(_hash(key, old), row.hashed_key) for old in settings.SECRET_KEY_FALLBACKS):
        rehash = True
    else:
        return None
    now = timezone.now()
    updates = {}
    if rehash:
        updates["hashed_key"] = current
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_GRANULARITY:
        updates["last_used_at"] = now
    if updates:
        ApiKey.objects.filter(pk=row.pk).update(**updates)
    return row
