"""Structured log lines: `event=name key=value ...`, or JSON with `LOG_FORMAT=json`.

`log_event` is the one way the real-time code logs a socket's life. Its fields
are ids, codes and names only: never a token, password, cookie or key, so the
lines can go to any log pipeline as they are.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

FIELDS = "event_fields"  # the LogRecord attribute that carries the fields


def _plain(value: Any) -> str:
    text = "-" if value is None else str(value)
    # Quote what would break key=value parsing.
    if not text or any(c in text for c in ' ="\n'):
        return json.dumps(text)
    return text


def log_event(logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    if not logger.isEnabledFor(level):
        return
    message = " ".join([f"event={event}", *(f"{k}={_plain(v)}" for k, v in fields.items())])
    logger.log(level, message, extra={FIELDS: {"event": event, **fields}})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        data.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)
