"""One development configuration for every command: the `.env` that `make run` writes.

config/devenv.py writes it when there is none; config/env.py reads it for every
command, with real environment variables winning. These tests point
RELAY_ENV_FILE at a temporary file, so a developer's own `.env` is never touched
(and the suite never reads it: pyproject.toml sets PYTHON_DOTENV_DISABLED).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from dotenv import dotenv_values

from realtime.launcher import Worker, http_get
from testsupport.faults import poll
from testsupport.processes import run_manage, subprocess_env
from testsupport.servers import receive_json, token_socket

ROOT = Path(settings.BASE_DIR)
# What a new shell has: none of the service's settings exported.
SERVICE_VARIABLES = ("DJANGO_", "REDIS_", "DATABASE_", "PYTHON_DOTENV_", "MAKE", "MFLAGS")


# This run's Redis prefixes: they keep its groups and keys apart on a shared
# Redis, and are the same in every process, as one deployment's are.
RUN_PREFIXES = ("CHANNEL_LAYER_PREFIX", "PRESENCE_KEY_PREFIX", "CHAT_RATE_KEY_PREFIX", "LIVE_KEY_PREFIX")


def new_shell(env_file: Path) -> dict[str, str]:
    """A second shell's environment, plus only the file's path and this run's Redis prefixes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_VARIABLES)}
    shared = subprocess_env()
    env.update({name: shared[name] for name in RUN_PREFIXES if name in shared})
    env["RELAY_ENV_FILE"] = str(env_file)
    return env


def readme_command(pattern: str) -> list[str]:
    """The README's command line matching `pattern`, split as a shell would."""
    (line,) = [line for line in (ROOT / "README.md").read_text().splitlines() if re.match(pattern, line)]
    return shlex.split(line.split("#", 1)[0])


def devenv(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "config.devenv"],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def show_setting(env: dict[str, str], name: str) -> str:
    code = f"import django; django.setup(); from django.conf import settings; print(settings.{name})"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def get_token(port: int, username: str, password: str) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/token/",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())["access"]


async def moved(port: int) -> bool:
    """Some demo price has been published again since seed_demo."""
    status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/api/topics/stocks.v/", 2)
    return status == 200 and (json.loads(body)["seq"] or 0) > 1


@pytest.mark.redis  # `make run` finds the Redis on 127.0.0.1:6379 (CI's and the machines')
@pytest.mark.django_db(transaction=True)
async def test_the_readmes_notify_from_a_second_shell_reaches_a_page_served_by_make_run(tmp_path):
    """`make run`, then the README's `manage.py notify` in a new shell: the open socket gets it live."""
    env_file = tmp_path / ".env"
    shell = new_shell(env_file)
    # `make run` as the README says, on a free port, with the test database
    # exported (as a user of PostgreSQL would) and this interpreter's venv.
    venv_bin = Path(sys.executable).parent
    argv = ["make", "run", f"BIN={venv_bin}", "PORT={port}", "-o", f"{venv_bin}/.installed"]
    make_env = {**shell, "DATABASE_URL": subprocess_env()["DATABASE_URL"]}
    # Its own process group: make, runserver and its reloader get each signal, SIGKILL after 15 s.
    make_run = Worker(
        argv=argv,
        name="make run",
        env=make_env,
        log_path=tmp_path / "make-run.log",
        ready="/healthz",
        own_session=True,
    )
    port = make_run.port
    try:
        await make_run.astart(90)
        # seed_demo's alice, as the README's watch.py logs in.
        token = await asyncio.to_thread(get_token, port, "alice", "demo-pass-123")
        socket = await token_socket(f"ws://127.0.0.1:{port}/ws/notifications/", token)
        await receive_json(socket, "welcome")

        command = readme_command(r"\.venv/bin/python manage\.py notify ")
        out = await run_manage(*command[2:], env=shell)  # the README's line, verbatim
        assert out.strip() == "1"
        frame = await receive_json(socket, "notification", wait=20)
        title, body = command[command.index("--title") + 1], command[command.index("--body") + 1]
        assert (frame["notification"]["title"], frame["notification"]["body"]) == (title, body)
        await socket.close()
        # demo_ticker runs beside the server: the seeded prices move (seq past 1).
        await poll(lambda: moved(port), seconds=60, what="a demo price moved")
    finally:
        await make_run.astop()
    written = dotenv_values(env_file)
    assert written["DJANGO_DEBUG"] == "true"
    assert written["REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert written["DATABASE_URL"] == make_env["DATABASE_URL"]
    assert len(written["DJANGO_SECRET_KEY"]) >= 50
    assert env_file.stat().st_mode & 0o077 == 0  # it holds a key: the owner's only


def test_make_run_writes_the_file_once_and_never_overwrites_it(tmp_path):
    """A second run, even with other variables exported, leaves the file byte for byte."""
    env_file = tmp_path / ".env"
    first = devenv(new_shell(env_file))
    assert first.returncode == 0, first.stderr
    assert f"wrote {env_file}" in first.stdout
    content = env_file.read_bytes()

    again = devenv({**new_shell(env_file), "DATABASE_URL": "sqlite:///elsewhere.sqlite3"})
    assert again.returncode == 0, again.stderr
    assert f"using {env_file}" in again.stdout
    assert "DATABASE_URL is set here but not to .env's value" in again.stdout
    assert env_file.read_bytes() == content


def test_every_command_reads_the_file_and_the_environment_wins(tmp_path):
    """Settings read the file; an exported variable overrides it; PYTHON_DOTENV_DISABLED reads none."""
    env_file = tmp_path / ".env"
    env_file.write_text("DJANGO_DEBUG=true\nWS_MAX_FRAME_BYTES=1000\n")
    shell = new_shell(env_file)
    assert show_setting(shell, "WS_MAX_FRAME_BYTES") == "1000"
    assert show_setting({**shell, "WS_MAX_FRAME_BYTES": "2000"}, "WS_MAX_FRAME_BYTES") == "2000"
    disabled = {**shell, "PYTHON_DOTENV_DISABLED": "1", "DJANGO_DEBUG": "true"}
    assert show_setting(disabled, "WS_MAX_FRAME_BYTES") == "65536"
    # This suite runs that way, so a developer's own .env never changes a test.
    assert os.environ["PYTHON_DOTENV_DISABLED"] == "1"
