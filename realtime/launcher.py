"""Worker processes on loopback ports: the one launcher the tests, the test kit, the bench and the stack use.

Owns the launchers the project runs under (`SERVERS`: `python -m realtime.serve`,
daphne, uvicorn with either websockets implementation, runserver), free loopback
ports, and `Worker`: one server process started on a port with an environment and
a log file, ready once it answers (`/readyz` 200, or its port accepting a
connection for a server without one), stopped with SIGTERM (a worker drains) and
SIGKILL after a bound; and the command of a private redis-server (`redis_server_argv`), which
fault tests and the bench start, break and restart instead of the machine's shared one.

Standard library only, and no Django: `deploy/stack.py` and the bench's parent
process import it without settings, and `relay_testing` (the user-facing pytest
plugin) may depend on it where it may not depend on this project's own tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
APP = "config.asgi:application"
# The servers the project runs under (arguments after `python`); {port} and {app} are filled in.
SERVERS = {
    "daphne": ["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "{app}"],
    "realtime.serve": ["-m", "realtime.serve", "--bind", "127.0.0.1", "--port", "{port}", "{app}"],
    # daphne's runserver (daphne is in INSTALLED_APPS); no reloader, so the launcher's pid is the server's.
    "runserver": ["manage.py", "runserver", "--noreload", "127.0.0.1:{port}"],
    # --no-proxy-headers, as the README says: uvicorn would otherwise take X-Forwarded-For
    # from any loopback peer as the client address (the login throttle's; TRUSTED_PROXIES).
    "uvicorn-websockets": [
        "-m", "uvicorn", "{app}", "--host", "127.0.0.1", "--port", "{port}", "--ws", "websockets",
        "--no-proxy-headers",
    ],
    "uvicorn-websockets-sansio": [
        "-m", "uvicorn", "{app}", "--host", "127.0.0.1", "--port", "{port}", "--ws", "websockets-sansio",
        "--no-proxy-headers",
    ],
}  # fmt: skip


def server_argv(server: str, port: int, app: str = APP) -> list[str]:
    """The arguments after `python` that run `app` under launcher `server` on `port`."""
    return [arg.format(port=port, app=app) for arg in SERVERS[server]]


def redis_server_argv(port: int | str, *options: str) -> list[str]:
    """A private redis-server on a loopback port, in memory only (no snapshot, no append-only file):
    what fault tests and the bench break and restart, never the machine's shared Redis."""
    program = shutil.which("redis-server") or "redis-server"
    argv = [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return [*argv, "--daemonize", "no", *options]


_handed_out: set[int] = set()
_handing_out = threading.Lock()  # the bench starts workers from several threads


def free_port() -> int:
    """A loopback port free right now, picked by the kernel from its ephemeral range.

    Not the first free port of a fixed range: runs of several people on one
    machine each took it at about the same moment, and a worker that lost the
    race to bind it left its run talking to another run's worker. Never 8000
    (someone's `make run`), and never a port this process handed out before:
    two workers made before either listens get different ports.
    """
    with _handing_out:
        while True:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            if port != 8000 and port not in _handed_out:
                _handed_out.add(port)
                return port


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET; an error status is an answer. OSError when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - a loopback URL of ours
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def database_url(database: Mapping[str, object]) -> str:
    """DATABASE_URL for a process that opens the same database as a Django connection (`settings_dict`)."""
    if str(database["ENGINE"]).endswith("postgresql"):
        password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
        host, port = database["HOST"] or "127.0.0.1", database["PORT"] or 5432
        return f"postgres://{database['USER']}{password}@{host}:{port}/{database['NAME']}"
    # A file: the settings give the SQLite test database one, so a second process can open it.
    return f"sqlite:///{database['NAME']}"


class Worker:
    """One server process on a loopback port; its output (stdout and stderr) is appended to `log_path`.

    `server` names a launcher of SERVERS running `app`, or `argv` is the whole
    command ({port} filled in). `ready` is the path that answers 200 once the
    process is ready, or None for a server without one: its port accepting a
    connection. `stop_grace` bounds the drain after SIGTERM; 0 kills at once,
    as a crash would. With `own_session` the process leads a process group of
    its own, which every signal goes to: a Ctrl-C in the terminal is the
    parent's to handle, and what the process started stops with it. It runs
    in `cwd`, the project's root unless said otherwise.
    Synchronous, so that tests on different event loops and plain scripts can
    share one; `astart`, `astop` and `exited` wait in a thread for async code.
    """

    def __init__(
        self,
        server: str = "realtime.serve",
        *,
        env: Mapping[str, str],
        log_path: Path | str,
        app: str = APP,
        argv: list[str] | None = None,
        port: int | None = None,
        name: str | None = None,
        ready: str | None = "/readyz",
        stop_grace: float = 15.0,
        own_session: bool = False,
        cwd: Path | str = ROOT,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        if argv is None:
            argv = [sys.executable, *server_argv(server, self.port, app)]
        self.argv = [arg.replace("{port}", str(self.port)) for arg in argv]
        self.name = name or server
        self.env = dict(env)
        self.log_path = Path(log_path)
        self.ready = ready
        self.stop_grace = stop_grace
        self.own_session = own_session
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.paused = False
        self._log: IO[bytes] | None = None

    # --- the process --------------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> Worker:
        """Start the process without waiting for it; `wait_ready` waits."""
        assert not self.running, f"{self.name} is already running"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our interpreter, or a command of our own
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=self.own_session,
        )
        return self

    def start(self, seconds: float = 60.0) -> Worker:
        """Spawn and wait until ready; stopped again if it is not, within `seconds`."""
        self.spawn()
        try:
            self.wait_ready(seconds)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, seconds: float = 60.0, *, path: str | None = None) -> None:
        """Poll until it is ready (`path`, else `self.ready`); bounded, fails with the last answer."""
        path = path or self.ready
        deadline = time.monotonic() + seconds
        last: object = None
        while True:
            if not self.running:
                code = self.process.returncode if self.process else None
                raise RuntimeError(f"{self.name} exited with {code} before it was ready:\n{self.log_tail()}")
            try:
                if path is None:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                    return
                last = http_get(f"{self.url}{path}", 1.0)
                if last[0] == 200:
                    return
            except OSError as exc:
                last = exc
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.name} not ready after {seconds:.0f}s: {last!r}; see {self.log_path}"
                )
            time.sleep(0.1)  # polling a starting process, not synchronising

    @staticmethod
    def wait_all_ready(workers: list[Worker], seconds: float, *, path: str | None = None) -> None:
        """Every one of `workers` ready (see `wait_ready`) within `seconds` in all."""
        deadline = time.monotonic() + seconds
        for worker in workers:
            worker.wait_ready(max(0.0, deadline - time.monotonic()), path=path)

    def signal(self, sig: int) -> None:
        """Send `sig` to the process (to its group, with `own_session`)."""
        with contextlib.suppress(ProcessLookupError):
            if self.own_session:
                os.killpg(self.pid, sig)
            else:
                self.process.send_signal(sig)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): its sockets stay open but nothing answers."""
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        """SIGTERM (a worker drains), SIGKILL if it has not exited within `stop_grace` seconds."""
        if self.running:
            if self.paused:
                self.resume()
            if self.stop_grace > 0:
                self.signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(self.stop_grace)
            if self.process.poll() is None:
                self.signal(signal.SIGKILL)
                self.process.wait(10)
        self.paused = False
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: no drain, no goodbye."""
        self.signal(signal.SIGKILL)
        self.process.wait(10)

    # --- the same, from async code ------------------------------------------------------
    async def astart(self, seconds: float = 60.0) -> Worker:
        return await asyncio.to_thread(self.start, seconds)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def exited(self, seconds: float) -> int:
        """The exit status once the process has exited (minus the signal that ended it); bounded."""
        return await asyncio.to_thread(self.process.wait, seconds)

    # --- what it printed ------------------------------------------------------------------
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, mark: int) -> str:
        """What it printed after `log_size()` returned `mark`."""
        with self.log_path.open("rb") as log:
            log.seek(mark)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log().splitlines()[-lines:])
        return ""

    def command(self) -> str:
        """The command line as a person would type it (`python`, not this interpreter's path)."""
        return " ".join(self.argv).replace(sys.executable, "python")
