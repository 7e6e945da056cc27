"""Helpers for tests that run whole deployments: scratch databases, servers, Sentinel.

A deployment here is what an operator runs: a database made with `migrate`
and `seed_demo`, server processes under any launcher the project supports
(`realtime.launcher.SERVERS`), and Redis, with the settings' defaults
wherever the test does not say otherwise (no per-test prefixes or namespace).
Everything is on loopback, private to the test, and removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from django.conf import settings

from notifications.management.commands.seed_demo import DEMO_PASSWORD
from realtime.launcher import Worker, free_port
from testsupport.faults import PrivateRedis, poll
from testsupport.processes import run_manage, subprocess_env
from testsupport.servers import post_json

# What the test run sets so that its own processes share names in Redis; a
# deployment of its own uses the defaults instead.
RUN_ONLY = ("REDIS_NAMESPACE", "CHANNEL_LAYER_PREFIX", "PRESENCE_KEY_PREFIX", "CHAT_RATE_KEY_PREFIX")


def deployment_env(*, database_url: str, **extra: str) -> dict[str, str]:
    """A server's environment with the settings' defaults for every Redis name."""
    env = {k: v for k, v in subprocess_env().items() if k not in RUN_ONLY}
    env.update(
        DATABASE_URL=database_url,
        DJANGO_DEBUG="false",
        DJANGO_SECURE_COOKIES="false",
        DATABASE_CONN_MAX_AGE="0",
        LOG_LEVEL="INFO",  # the start-up line with the namespace
        DRAIN_GRACE_SECONDS="0.2",  # stopped with SIGTERM at the end: no proxy to wait for
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _url_of(database: str) -> str:
    parts = urlsplit(subprocess_env()["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{database}"))


async def _admin(sql: str) -> None:
    async with await psycopg.AsyncConnection.connect(_url_of("postgres"), autocommit=True) as conn:
        await conn.execute(sql)


@contextlib.asynccontextmanager
async def demo_databases(count: int) -> AsyncIterator[list[str]]:
    """`count` new databases on the test's PostgreSQL, each with the demo data; dropped at the end.

    The first is made as an operator would (`migrate`, `seed_demo`, `createapikey`);
    the others are copies of it, so users, rooms and the API key have the same ids
    and values in each: what two deployments made the same way have.
    """
    base = f"{settings.DATABASES['default']['NAME']}_dep_{uuid.uuid4().hex[:6]}"
    names = [f"{base}_{n}" for n in range(count)]
    made: list[str] = []
    try:
        await _admin(f'CREATE DATABASE "{names[0]}"')
        made.append(names[0])
        env = deployment_env(database_url=_url_of(names[0]))
        await run_manage("migrate", "--noinput", env=env)
        await run_manage("seed_demo", env=env)
        for name in names[1:]:
            await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{names[0]}"')
            made.append(name)
        yield [_url_of(name) for name in names]
    finally:
        for name in made:
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def query(database_url: str, sql: str, *params) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(database_url, connect_timeout=5) as conn:
        return await (await conn.execute(sql, params)).fetchall()


@contextlib.asynccontextmanager
async def serving(*servers: tuple[str, dict[str, str], Path]) -> AsyncIterator[list[Worker]]:
    """Start (launcher, env, log path) servers together, wait until each is ready; stop them at the end."""
    started = [Worker(name, env=env, log_path=log_path).spawn() for name, env, log_path in servers]
    try:
        await asyncio.gather(*(asyncio.to_thread(server.wait_ready) for server in started))
        yield started
    finally:
        await asyncio.gather(*(asyncio.to_thread(server.stop) for server in started))


async def login(base: str, username: str) -> str:
    """A bearer token from `POST /api/token/` with the demo password."""
    status, body = await asyncio.to_thread(
        post_json, f"{base}/api/token/", {"username": username, "password": DEMO_PASSWORD}
    )
    assert status == 200, body
    return body["access"]


def get_json(url: str, *, token: str) -> tuple[int, dict]:
    """(status, JSON body) of a GET with a bearer token."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


async def manage(env: dict[str, str], *args: str) -> str:
    return await run_manage(*args, env=env)


# --- Redis with Sentinel ---------------------------------------------------------------------
class PrivateSentinel:
    """A master, a replica and one sentinel (quorum 1) on spare loopback ports.

    Fast failover for a test: the master counts as down after 1 s.
    `async with PrivateSentinel(tmp_path) as s:` starts them and waits until the
    sentinel knows both; everything is stopped at the end.
    """

    service = "relay"

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        # A replica writes the master's snapshot to its directory: the test's, not the cwd.
        self.master = PrivateRedis("--dir", str(directory))
        self.replica = PrivateRedis(
            "--dir", str(directory), "--replicaof", "127.0.0.1", str(self.master.port)
        )
        self.port = free_port()
        self.sentinel: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> PrivateSentinel:
        try:
            await self.master.start()
            await self.replica.start()
            config = self.dir / "sentinel.conf"  # the sentinel rewrites it: a file of the test's own
            config.write_text(
                f"port {self.port}\nbind 127.0.0.1\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1\n"
                f"sentinel down-after-milliseconds {self.service} 1000\n"
                f"sentinel failover-timeout {self.service} 10000\n"
            )
            self.sentinel = await asyncio.create_subprocess_exec(
                shutil.which("redis-server") or "redis-server",
                str(config),
                "--sentinel",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await poll(self._replica_known, seconds=30, what="sentinel sees the master and its replica")
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info) -> None:
        if self.sentinel is not None and self.sentinel.returncode is None:
            self.sentinel.kill()
            await self.sentinel.wait()
        await self.replica.stop()
        await self.master.stop()

    async def ask(self, *command: str) -> Any:
        from redis.asyncio import Redis

        client = Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=5)
        try:
            return await client.execute_command(*command)
        finally:
            await client.aclose()

    async def master_port(self) -> int:
        _, port = await self.ask("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(port)

    async def _replica_known(self) -> bool:
        from redis.exceptions import RedisError

        try:
            replicas = await self.ask("SENTINEL", "REPLICAS", self.service)
        except (OSError, RedisError):  # the sentinel is still starting
            return False
        # redis-py gives each replica as a dict of the sentinel's fields; in sync with the master?
        return any(
            r.get("port") == str(self.replica.port) and r.get("master-link-status") == "ok" for r in replicas
        )

    async def kill_master(self) -> None:
        """SIGKILL the master: no goodbye to its clients."""
        self.master.signal(signal.SIGKILL)
        await self.master.process.wait()
