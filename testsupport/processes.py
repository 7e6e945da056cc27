"""Other processes on this test's database and Redis names: `manage.py` commands and workers.

Workers are `realtime.launcher.Worker`s (the one launcher); this module gives
them the environment that makes them share what the test sees.
"""

from __future__ import annotations

import os

from django.conf import settings

from realtime.launcher import Worker, database_url

# Logs of workers, screenshots: kept after the run (gitignored).
ARTIFACTS = settings.BASE_DIR / "test-artifacts"


def subprocess_env() -> dict[str, str]:
    """Environment for a second process that shares this test's database and Redis layer."""
    from django.db import connection

    env = dict(os.environ)
    env["DATABASE_URL"] = database_url(connection.settings_dict)
    # The run's namespace and names (see testsupport.run.configure), not the namespace the
    # test database's name would give: the settings add it to each name.
    env["REDIS_NAMESPACE"] = settings.REDIS_NAMESPACE
    env["CHANNEL_LAYER_PREFIX"] = settings.CHANNEL_LAYER_PREFIX
    env["PRESENCE_KEY_PREFIX"] = settings.PRESENCE_KEY_PREFIX
    env["CHAT_RATE_KEY_PREFIX"] = settings.CHAT_RATE_KEY_PREFIX
    env["WS_SOCKETS_KEY_PREFIX"] = settings.WS_SOCKETS_KEY_PREFIX
    env["LOGIN_THROTTLE_KEY_PREFIX"] = settings.LOGIN_THROTTLE_KEY_PREFIX
    env["LIVE_KEY_PREFIX"] = settings.LIVE_KEY_PREFIX
    env.setdefault("DJANGO_SECRET_KEY", settings.SECRET_KEY)
    return env


def server_env(tag: str) -> dict[str, str]:
    """A worker's environment: this test's database and layer, presence and rate keys under `tag`."""
    env = subprocess_env()
    env.update(
        DJANGO_DEBUG="false",
        DJANGO_SECURE_COOKIES="false",  # plain http on loopback
        WHITENOISE_USE_FINDERS="true",  # static files without collectstatic
        DATABASE_CONN_MAX_AGE="0",
        # Keys of this test's own in a shared Redis (presence, rate limits).
        PRESENCE_KEY_PREFIX=f"test-presence-{tag}",
        CHAT_RATE_KEY_PREFIX=f"test-rate-{tag}",
        DRAIN_GRACE_SECONDS="0.2",  # a test restart need not wait for a proxy to notice
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


def live_worker(env: dict[str, str], log_name: str) -> Worker:
    """A `python -m realtime.serve` worker (daphne with the graceful drain) whose log is kept in ARTIFACTS.

    It can be stopped (SIGTERM: open sockets get 1012) and started again on the same port.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    return Worker("realtime.serve", env=env, log_path=ARTIFACTS / f"{log_name}.server.log")


async def run_manage(*args: str, env: dict[str, str] | None = None) -> str:
    """Run `manage.py` in a separate process (default: on this test's database); returns its stdout."""
    import asyncio
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "manage.py",
        *args,
        env=env if env is not None else subprocess_env(),
        cwd=str(settings.BASE_DIR),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()
