"""Which exceptions mean "a backing service is down" rather than "a bug", and how to log them."""

from __future__ import annotations

import json
import logging

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


def describe(exc: BaseException) -> str:
    """`Class: first line of the message`, e.g. `OperationalError: connection failed: ... refused`."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def log_unavailable(logger: logging.Logger, exc: BaseException, message: str, *args: object) -> None:
    """Log one of UNAVAILABLE_ERRORS: a warning that names the error, without its traceback.

    The cause is outside the process (PostgreSQL or Redis down), so the
    traceback says nothing an operator can act on, and it would repeat for
    every request while the outage lasts. At DEBUG the traceback is kept.
    """
    logger.warning(
        f"{message} error=%s", *args, json.dumps(describe(exc)), exc_info=logger.isEnabledFor(logging.DEBUG)
    )


__all__ = ["UNAVAILABLE_ERRORS", "DatabaseError", "describe", "log_unavailable"]
