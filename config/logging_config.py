"""The LOGGING setting: one line per event, through a handler that masks secrets.

The level and the format ("plain" or "json") come from LOG_LEVEL and LOG_FORMAT,
which config/settings.py reads; realtime.operations.logs and .redaction hold the
formatter and the filter this names.
"""

from __future__ import annotations

import logging
from typing import Any


def logging_config(*, level: str, formatter: str) -> dict[str, Any]:
    """Django's LOGGING dict: the root and the noisy libraries through one redacting console handler."""
    # uvicorn configures its logging before it imports the application (and these
    # settings): `--no-access-log` has left its access logger without a handler.
    access_log_off = "uvicorn.access" in logging.root.manager.loggerDict and not (
        logging.getLogger("uvicorn.access").handlers
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
            "json": {"()": "realtime.operations.logs.JsonFormatter"},
        },
        # Defence in depth: our code never logs a credential, and this filter
        # masks any that a library might (an Authorization header, a JWT, an API key).
        "filters": {"redact": {"()": "realtime.operations.redaction.RedactSecrets"}},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": formatter, "filters": ["redact"]}
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's defaults give these unfiltered handlers of their own; drop
            # them, so their records reach the root's redacting handler instead.
            "django": {"handlers": [], "level": "INFO", "propagate": True},
            "django.server": {"handlers": [], "level": "INFO", "propagate": True},
            "django.db.backends": {"level": "INFO"},
            # uvicorn gives its loggers handlers of its own, which print request lines
            # (query strings included) unfiltered: route them through the redacting one.
            # Their levels stay uvicorn's (--log-level).
            "uvicorn": {"handlers": ["console"], "propagate": False},
            "uvicorn.access": {
                "handlers": [] if access_log_off else ["console"],
                "propagate": False,
            },
        },
    }
