"""Environment, subprocesses and small helpers shared by the workloads.

Everything the suite starts is a child of this process, listens on loopback
only, and is stopped by `Stack.close()` (also on Ctrl-C and on errors).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
SESSION_COOKIE = "sessionid"

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/5"


def raise_nofile() -> int:
    """Raise this process's open-file limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def bench_env(**extra: str) -> dict[str, str]:
    """The environment every server, driver and setup step of the suite gets."""
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    env.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    env.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-not-for-production")
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env["DJANGO_DEBUG"] = "false"
    env["DJANGO_ALLOWED_HOSTS"] = "127.0.0.1,localhost"
    # The fan-out workload posts as fast as it can: the rate limit must not be the limit.
    env["CHAT_RATE_PER_SECOND"] = "1000000"
    env["CHAT_RATE_BURST"] = "1000000"
    # channels_redis drops messages silently above `capacity` per channel list; all
    # sockets of one process share one list, so 100,000 deliveries need more room.
    env["CHANNEL_LAYER_CAPACITY"] = "1000000"
    env.setdefault("CHANNEL_LAYER_PREFIX", "bench")
    # One log line per socket would be part of the measurement; keep warnings.
    env["LOG_LEVEL"] = "WARNING"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# Settings that are part of the figures: recorded with every result.
RECORDED_ENV = (
    "DATABASE_URL",
    "REDIS_URL",
    "CHAT_RATE_PER_SECOND",
    "CHAT_RATE_BURST",
    "CHANNEL_LAYER_CAPACITY",
    "CHANNEL_LAYER_PREFIX",
    "LOG_LEVEL",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if port == 8000:  # never collide with someone's `make run`
        return free_port()
    return port


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """One server subprocess (daphne, uvicorn, or the websockets baseline)."""

    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.log_path = logdir / f"{name}-{port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # our Ctrl-C is handled here, not in the child
        )
        try:
            wait_port(port, self.proc)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def command(self) -> str:
        return " ".join(self.argv).replace(PY, "python")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


class Stack:
    """Owns every subprocess of one workload; `close()` stops them all."""

    def __init__(self) -> None:
        self.servers: list[Server] = []
        self.logdir = Path(tempfile.mkdtemp(prefix="bench-logs-"))

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()

    def daphne(self, app: str = "config.asgi:application", env: dict[str, str] | None = None) -> Server:
        port = free_port()
        argv = [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]
        return self._add(Server("daphne", argv, port, env or bench_env(), self.logdir))

    def uvicorn(self, app: str = "config.asgi:application", env: dict[str, str] | None = None) -> Server:
        port = free_port()
        loop = os.environ.get("BENCH_UVICORN_LOOP", "asyncio")
        argv = [PY, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--loop", loop, "--no-access-log", "--log-level", "warning"]
        return self._add(Server("uvicorn", argv, port, env or bench_env(), self.logdir))

    def serve(self, app: str = "config.asgi:application", env: dict[str, str] | None = None) -> Server:
        """The production launcher (daphne with the drain and the slow-client bound), as compose runs it."""
        port = free_port()
        argv = [PY, "-m", "realtime.serve", "--bind", "127.0.0.1", "--port", str(port), app]
        return self._add(Server("serve", argv, port, env or bench_env(), self.logdir))

    def websockets_baseline(self) -> Server:
        port = free_port()
        argv = [PY, "-m", "bench.baseline_websockets", "--port", str(port)]
        return self._add(Server("websockets", argv, port, bench_env(), self.logdir))

    def _add(self, server: Server) -> Server:
        self.servers.append(server)
        return server


def start_django(
    args: list[str], *, env: dict[str, str] | None = None, stderr=subprocess.PIPE
) -> subprocess.Popen:
    """Start `python -m bench.django_side ARGS` without waiting; `finish_django` collects it.

    A long-running command should get a file as `stderr`: nobody reads the pipe
    until it ends, and a full pipe would stall it.
    """
    argv = [PY, "-m", "bench.django_side", *args]
    return subprocess.Popen(
        argv, cwd=ROOT, env=env or bench_env(), stdout=subprocess.PIPE, stderr=stderr, text=True
    )


def finish_django(proc: subprocess.Popen, args: list[str], *, timeout: float = 600) -> dict[str, Any]:
    """Wait (bounded) for a `start_django` process and return the JSON it prints last."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{(err or '')[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def run_django(args: list[str], *, timeout: float = 600, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `python -m bench.django_side ARGS` and return the JSON it prints last."""
    return finish_django(start_django(args, env=env), args, timeout=timeout)


def redis_client():
    import redis

    return redis.Redis.from_url(bench_env()["REDIS_URL"])


def redis_calls() -> dict[str, int]:
    """Total calls per command on the whole Redis server (INFO commandstats)."""
    stats = redis_client().info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in (
        "Django",
        "channels",
        "channels_redis",
        "daphne",
        "uvicorn",
        "websockets",
        "picows",
        "uvloop",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    with contextlib.suppress(Exception):
        out["redis-server"] = redis_client().info("server")["redis_version"]
    return out
