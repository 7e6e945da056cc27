"""Write the development `.env` that `make run` and every other command read.

    python -m config.devenv

Writes the file (`.env` in the project, or $RELAY_ENV_FILE) only when there
is none, and never changes one that exists: debug on, a generated secret key,
the Redis it found (REDIS_URL when set, else a Redis answering on
127.0.0.1:6379, else none: the in-process layer) and DATABASE_URL when set.
Since the settings read the file for every command, `manage.py notify` in
another shell uses the same key, database and channel layer as the server.
It imports no Django settings, so it runs before the file exists.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from dotenv import dotenv_values

from config.env import env_file_path

BASE_DIR = Path(__file__).resolve().parent.parent
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
# Written from the environment when set there, so other shells get them too.
SHARED = ("DATABASE_URL", "REDIS_URL")


def local_redis() -> str | None:
    """LOCAL_REDIS when a Redis answers there within a moment, else None."""
    import redis

    client = redis.Redis.from_url(LOCAL_REDIS, socket_connect_timeout=0.3, socket_timeout=0.3)
    try:
        client.ping()
    except redis.RedisError:
        return None
    finally:
        client.close()
    return LOCAL_REDIS


def development_env(environ: dict[str, str]) -> str:
    """The file's text: debug, a new key, the channel layer and database in use."""
    redis_url = environ.get("REDIS_URL") or local_redis()
    lines = [
        "# Development settings, written by `make run` because there was no .env; it",
        "# never changes this file again. Every command reads it (manage.py, runserver,",
        "# daphne, uvicorn, python -m realtime.serve); a variable set in the environment",
        "# wins. Not for production: there, start from .env.example.",
        "DJANGO_DEBUG=true",
        f"DJANGO_SECRET_KEY={secrets.token_urlsafe(50)}",
    ]
    if redis_url:
        lines.append(f"REDIS_URL={redis_url}")
    else:
        lines += [
            "# No Redis answered: the in-process channel layer, so a `manage.py notify` from",
            "# another shell is stored but reaches open pages only when they reconnect.",
            "# Start Redis and uncomment this to push live from any process:",
            f"# REDIS_URL={LOCAL_REDIS}",
        ]
    if environ.get("DATABASE_URL"):
        lines.append(f"DATABASE_URL={environ['DATABASE_URL']}")
    return "\n".join(lines) + "\n"


def write_if_missing(path: Path, environ: dict[str, str]) -> bool:
    """Create the file (owner-only: it holds a key); False when it already existed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        out.write(development_env(environ))
    return True


def main() -> int:
    path = env_file_path(BASE_DIR)
    if write_if_missing(path, dict(os.environ)):
        print(f"wrote {path} (development settings for every command)")
    else:
        print(f"using {path} (kept as it is)")
    values = dotenv_values(path)
    for name in SHARED:
        if os.environ.get(name) and os.environ[name] != values.get(name):
            print(f"note: {name} is set here but not to {path.name}'s value; other shells use the file's")
    redis_url = os.environ.get("REDIS_URL") or values.get("REDIS_URL")
    layer = redis_url or f"in-process (REDIS_URL in {path.name} lets other processes push)"
    print(f"channel layer: {layer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
