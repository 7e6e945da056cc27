"""Settings read from the environment."""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings


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
