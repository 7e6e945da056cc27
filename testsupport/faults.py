"""What the fault tests break: private Redis and PostgreSQL servers on loopback, workers killed as a crash.

Each fault test owns what it breaks: a private `redis-server` (`PrivateRedis`)
or PostgreSQL cluster made with `initdb` (`PrivatePostgres`) on a free port,
never the machine's shared instances, and worker subprocesses
(`fault_worker`: realtime.launcher's, killed when stopped) pointed at them.
`poll` waits, bounded, for what such a server or worker does next. The clients
that record what they got meanwhile are in `testsupport.recording`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from realtime.launcher import Worker, free_port, http_get, redis_server_argv
from testsupport.processes import ARTIFACTS, server_env, subprocess_env

# The marks of a fault module's tests, before its own timeout:
# `pytestmark = [*FAULT_MARKS, pytest.mark.timeout(120)]`.
FAULT_MARKS = [
    pytest.mark.faults,
    pytest.mark.redis,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
]


async def tcp_probe(port: int, request: bytes, *, seconds: float = 2.0) -> bytes | None:
    """The first line a loopback server answers to `request`, or None if it does not (yet)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), seconds)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), seconds)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()


async def poll(check, *, seconds: float, what: str):
    """Bounded polling of an external state (a process, a service coming back)."""
    deadline = time.monotonic() + seconds
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds}s")
        await asyncio.sleep(0.1)


class PrivateRedis:
    """A `redis-server` of the test's own on a spare loopback port: stopped, started, signalled at will."""

    def __init__(self, *options: str) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.options = options  # more redis-server options, e.g. a replica's --replicaof
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *redis_server_argv(self.port, *self.options),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await poll(self._answers, seconds=10, what="private redis up")

    async def _answers(self) -> bool:
        reply = await tcp_probe(self.port, b"PING\r\n", seconds=1)
        return reply is not None and reply.startswith(b"+PONG")

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            await process.wait()

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)


def postgres_program(name: str) -> str:
    """A PostgreSQL server program: Debian keeps them off PATH, in /usr/lib/postgresql/<major>/bin."""
    found = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if found:
        return str(found[-1])  # the newest major version installed
    on_path = shutil.which(name)
    if on_path is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)")
    return on_path


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own, made with `initdb` in a temporary directory.

    Trust authentication, TCP on 127.0.0.1 only on a spare port, its unix
    socket in that directory. The server refuses to run as root, so as
    root its programs run as the `postgres` OS user, which owns the directory.
    `async with PrivatePostgres() as pg:` creates and starts it with an empty
    database (`pg.url`) and always removes it, server and files, at the end.
    """

    database = "relay"

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"
        self.dir: Path | None = None

    @property
    def data(self) -> Path:
        return self.dir / "data"

    async def __aenter__(self) -> PrivatePostgres:
        self.dir = Path(tempfile.mkdtemp(prefix="relay-pg-"))
        try:
            if os.geteuid() == 0:
                owner = pwd.getpwnam("postgres")
                os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            # No fsync: the cluster lives for one test; crash safety buys nothing here.
            await self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
            await self.start()
            await self._run(
                "createdb", "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", self.database
            )
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc_info) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                await self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    async def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        log = str(self.dir / "server.log")
        await self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "-t", "60", "start")

    async def stop(self) -> None:
        """Stop as an operator would (`-m fast`): sessions are cut, open transactions rolled back."""
        await self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    async def query(self, sql: str, *params) -> list[tuple]:
        """Rows of one statement on the private database (the test's ORM uses the shared one)."""
        async with await psycopg.AsyncConnection.connect(self.url, connect_timeout=5) as conn:
            return await (await conn.execute(sql, params)).fetchall()

    async def _run(self, program: str, *args: str) -> None:
        command = [postgres_program(program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=str(self.dir),  # a directory the postgres user may enter
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{program} failed ({process.returncode}): {output.decode(errors='replace')}")


def fault_worker(env: dict[str, str], log_path: Path, server: str = "realtime.serve") -> Worker:
    """A worker under launcher `server` (realtime.launcher.SERVERS) that `stop()` kills, as a crash would.

    What a fault test breaks, it breaks for real: no drain, no goodbye to Redis or the database.
    """
    return Worker(server, env=env, log_path=log_path, stop_grace=0)


async def ready_again(worker: Worker, *, what: str) -> None:
    """Wait (bounded) until the worker's /readyz answers 200: its Redis is back and it uses it."""

    async def ready():
        return (await asyncio.to_thread(http_get, f"{worker.url}/readyz", 3))[0] == 200

    await poll(ready, seconds=30, what=what)


def worker_env(redis: PrivateRedis, **extra: str) -> dict[str, str]:
    env = subprocess_env()
    tag = uuid.uuid4().hex[:8]
    env.update(
        REDIS_URL=redis.url,
        DJANGO_DEBUG="false",
        DJANGO_SECURE_COOKIES="false",
        DATABASE_CONN_MAX_AGE="0",
        CHANNEL_LAYER_PREFIX=f"fault-{tag}",
        PRESENCE_KEY_PREFIX=f"fault-presence-{tag}",
        CHAT_RATE_KEY_PREFIX=f"fault-rate-{tag}",
        HUB_HEARTBEAT_SECONDS="0.5",
        HUB_HEARTBEAT_TIMEOUT_SECONDS="3",
        REDIS_SOCKET_TIMEOUT="6",
        REDIS_CONNECT_TIMEOUT="1",
        DRAIN_GRACE_SECONDS="0.2",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def running(*things):
    """Stop the private servers and workers at the end, in the order given."""
    try:
        yield
    finally:
        for thing in things:
            await (thing.astop() if isinstance(thing, Worker) else thing.stop())


async def start_workers(request, *servers: str, **env: str) -> list[Worker]:
    """Fault workers (one per server kind in `servers`) on this test's database and Redis, started
    together; `env` adds to their environment. Stops the ones that started if another fails."""
    ARTIFACTS.mkdir(exist_ok=True)
    worker_env = {**server_env(uuid.uuid4().hex[:10]), **env}
    name = request.node.name.replace("/", "_")[:60]
    workers = [
        fault_worker(worker_env, ARTIFACTS / f"{name}-{i}.log", server) for i, server in enumerate(servers)
    ]
    try:
        await asyncio.gather(*(worker.astart() for worker in workers))
    except BaseException:
        await asyncio.gather(*(worker.astop() for worker in workers))
        raise
    return workers
