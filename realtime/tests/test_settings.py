"""Settings read from the environment."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from realtime.launcher import SERVERS, free_port, server_argv

ROOT = Path(settings.BASE_DIR)
KEY = "DJANGO_SECRET_KEY"


def load_settings(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "WS_", "CHAT_", "REDIS"))}
    return subprocess.run(
        [sys.executable, "-c", "import config.settings as s; print(s.CHANNEL_LAYERS['default']['BACKEND'])"],
        env={**clean, **env},
        cwd=str(settings.BASE_DIR),
        capture_output=True,
        text=True,
        check=False,
    )


def test_production_mode_refuses_to_start_without_a_secret_key():
    """DJANGO_DEBUG false (the default) and no DJANGO_SECRET_KEY is a start-up error."""
    result = load_settings()
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is required" in result.stderr


def test_debug_mode_has_a_development_key_and_the_in_process_layer():
    """With DJANGO_DEBUG=true and no REDIS_URL the service starts on the in-process layer."""
    result = load_settings(DJANGO_DEBUG="true")
    assert result.stdout.strip() == "channels.layers.InMemoryChannelLayer"


def test_a_malformed_number_names_the_variable():
    """A non-integer limit fails at start-up naming the variable."""
    result = load_settings(DJANGO_DEBUG="true", WS_MAX_FRAME_BYTES="lots")
    assert result.returncode != 0
    assert "WS_MAX_FRAME_BYTES must be an integer" in result.stderr


def env_example_secret_key() -> str:
    (line,) = [
        line for line in (ROOT / ".env.example").read_text().splitlines() if line.startswith(KEY + "=")
    ]
    return line.split("=", 1)[1]


def test_production_mode_refuses_a_placeholder_secret_key():
    """.env.example's key, or another obvious placeholder, stops start-up with a clear message."""
    for placeholder in (env_example_secret_key(), "django-insecure-0a1b2c3d4e5f", "your-secret-key-here"):
        result = load_settings(DJANGO_SECRET_KEY=placeholder)
        assert result.returncode != 0
        assert "ImproperlyConfigured: DJANGO_SECRET_KEY is still a placeholder" in result.stderr
        assert placeholder not in result.stderr  # the value itself is never printed
    assert load_settings(DJANGO_SECRET_KEY=secrets.token_urlsafe(50)).returncode == 0
    # Development may keep any key: nothing it signs is meant to last.
    assert load_settings(DJANGO_SECRET_KEY=env_example_secret_key(), DJANGO_DEBUG="true").returncode == 0


@pytest.mark.parametrize("server", [*SERVERS, "manage.py"])
def test_every_command_refuses_to_start_with_the_placeholder_key(server):
    """The image's command, plain daphne, uvicorn and manage.py all stop on .env.example's key."""
    argv = ["manage.py", "check"] if server == "manage.py" else server_argv(server, free_port())
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    result = subprocess.run(
        [sys.executable, *argv],
        env={**clean, KEY: env_example_secret_key()},
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,  # each exits at start-up; bounded in case one serves instead
        check=False,
    )
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is still a placeholder" in result.stdout + result.stderr
