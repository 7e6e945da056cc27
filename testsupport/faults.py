"""Helpers of the fault tests (issue 7): private services and workers on loopback, recording clients.

Each fault test owns what it breaks: a private `redis-server` (`PrivateRedis`)
or PostgreSQL cluster made with `initdb` (`PrivatePostgres`) on a free port,
never the machine's shared instances, and worker subprocesses
(`fault_worker`: realtime.launcher's, killed when stopped) pointed at them. `Follower`s reconnect and resume
like the browser client and record every id they got per connection; `settle`
compares them with the database at the end: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from channels.db import database_sync_to_async
from websockets.exceptions import ConnectionClosed, WebSocketException

from chat.models import Message
from notifications.models import Notification
from realtime.launcher import Worker, free_port, redis_server_argv
from testsupport.processes import ARTIFACTS, server_env, subprocess_env
from testsupport.servers import browser_socket, token_socket


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


@dataclass
class Follower:
    """A client that reconnects and resumes like static/js/realtime.js, recording every id."""

    urls: list[str]  # tried in turn: a dead worker's clients go to the next
    user: object  # a session cookie for this user is made in the test's database...
    kind: str  # "message" or "notification"
    token: str | None = None  # ...unless a bearer token is given (a worker on another database)
    connections: list[list[int]] = field(default_factory=list)
    closes: list[int | None] = field(default_factory=list)
    last_id: int | None = None
    live: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    # Handshakes that failed (refused, dropped by the server, timed out), by error name.
    refused: list[str] = field(default_factory=list)
    # What ended run() other than being stopped: a client that died must not pass for a hang.
    failure: BaseException | None = None

    def ids(self) -> set[int]:
        return {i for c in self.connections for i in c}

    async def run(self) -> None:
        try:
            await self._run()
        except Exception as exc:
            self.failure = exc
            raise

    async def _run(self) -> None:
        attempt = 0
        while not self.stopping:
            url = self.urls[attempt % len(self.urls)]
            attempt += 1
            try:
                if self.token is not None:
                    ws = await token_socket(url, self.token)
                else:
                    ws = await browser_socket(url, self.user)
            except (OSError, TimeoutError, WebSocketException) as exc:
                # Like the browser: any failed opening (a status, a handshake the
                # server dropped) is followed by another attempt.
                self.refused.append(type(exc).__name__)
                await asyncio.sleep(0.3)  # reconnect backoff, not synchronisation
                continue
            got: list[int] = []
            self.connections.append(got)
            try:
                await self._session(ws, got)
            except ConnectionClosed as exc:
                self.closes.append(exc.rcvd.code if exc.rcvd else None)
            finally:
                self.live.clear()
                await ws.close()
            await asyncio.sleep(0.2)

    async def _session(self, ws, got: list[int]) -> None:
        replaying = False
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "welcome":
                if self.last_id is None:
                    # A fresh client starts from welcome: chat's last_id, the inbox's last_id.
                    self.last_id = frame.get("last_id") or 0
                    self.live.set()
                else:
                    replaying = True
                    await ws.send(json.dumps({"type": "resume", "after": self.last_id}))
            elif frame["type"] == self.kind:
                item = frame[self.kind]
                got.append(item["id"])
                if not replaying:
                    self.last_id = max(self.last_id, item["id"])
            elif frame["type"] == "replay_done":
                self.last_id = frame["last_id"] or self.last_id
                if frame["more"]:
                    await ws.send(json.dumps({"type": "resume", "after": self.last_id}))
                else:
                    replaying = False
                    self.live.set()


def publish(base: str, key: str, path: str, body: dict) -> tuple[int, dict]:
    return post_json(f"{base}{path}", body, authorization=f"Api-Key {key}")


def post_json(url: str, body: dict, *, authorization: str | None = None) -> tuple[int, dict]:
    """(status, JSON body) of a POST; status 0 when the connection itself failed."""
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    request = urllib.request.Request(  # noqa: S310 - loopback
        url, data=json.dumps(body).encode(), method="POST", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (OSError, TimeoutError) as exc:
        return 0, {"error": type(exc).__name__}


@dataclass
class Poster:
    """Posts chat messages and notifications through the publish API; records every answer."""

    bases: list[str]
    key: str
    answers: list[tuple[str, int, dict]] = field(default_factory=list)

    async def post(self, n: int) -> None:
        base = self.bases[n % len(self.bases)]
        chat = await asyncio.to_thread(publish, base, self.key, "/api/publish/chat/lobby/", {"body": f"m{n}"})
        self.answers.append(("chat", *chat))
        note = await asyncio.to_thread(
            publish, base, self.key, "/api/publish/notifications/", {"users": ["alice"], "title": f"n{n}"}
        )
        self.answers.append(("notification", *note))


db_message_ids = database_sync_to_async(lambda: set(Message.objects.values_list("id", flat=True)))
db_notification_ids = database_sync_to_async(lambda: set(Notification.objects.values_list("id", flat=True)))

# The ids clients should have got: (chat message ids, notification ids), read from the database.
RowIds = Callable[[], Awaitable[tuple[set[int], set[int]]]]


async def shared_database_ids() -> tuple[set[int], set[int]]:
    return await db_message_ids(), await db_notification_ids()


async def settle(
    followers: list[Follower], poster: Poster, n: int, *, rows: RowIds = shared_database_ids
) -> None:
    """After the fault: one more post (live pushes heal gaps), then every client has every row."""
    await poster.post(n)

    async def converged():
        messages, notes = await rows()
        return all(f.ids() >= (messages if f.kind == "message" else notes) for f in followers)

    try:
        await poll(converged, seconds=40, what="clients converge on the database")
    except AssertionError:
        messages, notes = await rows()
        missing = [
            (f.kind, sorted((messages if f.kind == "message" else notes) - f.ids()), f.closes, f.failure)
            for f in followers
        ]
        raise AssertionError(f"clients did not converge: {missing}") from None
    messages, notes = await rows()
    for follower in followers:
        expected = messages if follower.kind == "message" else notes
        assert follower.ids() == expected, "a client got an id that is not in the database"
        for got in follower.connections:
            assert len(got) == len(set(got)), f"duplicate within one connection: {got}"


def check_answers(poster: Poster) -> None:
    """Every post was either stored and acknowledged, or refused with an error: never silent."""
    for kind, status, body in poster.answers:
        if status in (201, 202):
            continue
        assert status in (0, 503) or "error" in body, (kind, status, body)
    stored = sum(1 for kind, status, _ in poster.answers if kind == "chat" and status == 201)
    assert stored >= 1


@contextlib.asynccontextmanager
async def running(*things):
    """Stop the private servers and workers at the end, in the order given."""
    try:
        yield
    finally:
        for thing in things:
            await (thing.astop() if isinstance(thing, Worker) else thing.stop())


async def follow(
    worker_urls: list[str], alice, *, token: str | None = None
) -> tuple[list[Follower], list[asyncio.Task]]:
    followers = [
        Follower([f"{u}/ws/chat/lobby/" for u in worker_urls], alice, "message", token),
        Follower([f"{u}/ws/notifications/" for u in worker_urls], alice, "notification", token),
    ]
    tasks = [asyncio.ensure_future(f.run()) for f in followers]
    for f in followers:
        await asyncio.wait_for(f.live.wait(), 20)
    return followers, tasks


async def stop_following(followers, tasks) -> None:
    for f in followers:
        f.stopping = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for f in followers:
        assert f.failure is None, f"a follower died: {f.failure!r}"


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
