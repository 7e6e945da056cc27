"""Where settings come from: the environment, then a development `.env` file.

`load_env_file` reads the development `.env` (`make run` writes one when
there is none) into the environment without overriding what is set, so every
command (manage.py, runserver, daphne, uvicorn, `python -m realtime.serve`)
sees one development configuration and a real environment variable still
wins. python-dotenv parses the file, and only that: the readers below already
type-check each variable and name it in errors, and dj-database-url parses
DATABASE_URL, so django-environ would add a second way to read the same
values. python-dotenv is also what uvicorn's --env-file and pytest-env use.

Each reader returns the default when the variable is unset or empty, and
raises ImproperlyConfigured with the variable's name when it is set to
nonsense, so a typo fails at start-up instead of at the first request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from django.core.exceptions import ImproperlyConfigured
from dotenv import load_dotenv

# Set to another path to read that file instead of the project's `.env`.
# PYTHON_DOTENV_DISABLED=1 (python-dotenv's own switch) reads none: the test
# suite sets it, so a developer's `.env` never leaks into a test run.
ENV_FILE_VARIABLE = "RELAY_ENV_FILE"


def env_file_path(base_dir: Path) -> Path:
    """The development configuration file: $RELAY_ENV_FILE, else `.env` in the project."""
    return Path(os.environ.get(ENV_FILE_VARIABLE) or base_dir / ".env")


def load_env_file(base_dir: Path) -> None:
    """Add the file's variables to the environment; variables already set keep their values."""
    load_dotenv(env_file_path(base_dir), override=False)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str = "") -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name).lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of {sorted(_TRUE | _FALSE)}")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    return _env_number(name, default, minimum, int, "an integer")


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    return _env_number(name, default, minimum, float, "a number")


_Number = TypeVar("_Number", int, float)


def _env_number(
    name: str, default: _Number, minimum: _Number, parse: Callable[[str], _Number], kind: str
) -> _Number:
    value = env_str(name)
    if not value:
        return default
    try:
        number = parse(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be {kind}") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = env_str(name)
    if not value:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


# Parts of the secret keys people copy and forget to replace: .env.example's
# "change-me-to-a-long-random-string", Django's "django-insecure-..." and our
# own development key, "your-secret-key-here" and the like.
_PLACEHOLDER_PARTS = ("changeme", "replaceme", "insecure", "placeholder", "yoursecret", "secretkeyhere")
_PLACEHOLDER_WORDS = {"secret", "secretkey", "djangosecretkey", "key", "password", "todo", "xxx"}


def is_placeholder_secret(value: str) -> bool:
    """True for a value that is obviously an example, not a generated secret."""
    folded = re.sub(r"[^a-z0-9]", "", value.lower())
    return folded in _PLACEHOLDER_WORDS or any(part in folded for part in _PLACEHOLDER_PARTS)
