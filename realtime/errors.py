"""Which exceptions mean "a backing service is down" rather than "a bug"."""

from __future__ import annotations

from django.db import DatabaseError, InterfaceError, OperationalError

try:  # redis is present whenever the Redis channel layer is configured
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    _REDIS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError)
except ImportError:  # pragma: no cover
    _REDIS = ()

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    ConnectionError,
    TimeoutError,
    *_REDIS,
)

__all__ = ["UNAVAILABLE_ERRORS", "DatabaseError"]
