"""Environment, subprocesses and small helpers shared by the workloads.

Everything the suite starts is a child of this process, listens on loopback
only, and is stopped by `Stack.close()` (also on Ctrl-C and on errors).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from realtime.launcher import APP, Worker, free_port, redis_server_argv

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


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stack:
    """Owns every server process of one workload (realtime.launcher's `Worker`); `close()` stops them all.

    Each leads a process group of its own (our Ctrl-C is handled here, not in
    the child), is ready once its port accepts a connection, and gets 10 s to
    exit on SIGTERM before SIGKILL.
    """

    def __init__(self) -> None:
        self.servers: list[Worker] = []
        self.logdir = Path(tempfile.mkdtemp(prefix="bench-logs-"))

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()

    def daphne(self, app: str = APP, env: dict[str, str] | None = None) -> Worker:
        return self._start("daphne", env or bench_env(), server="daphne", app=app)

    def uvicorn(self, app: str = APP, env: dict[str, str] | None = None) -> Worker:
        loop = os.environ.get("BENCH_UVICORN_LOOP", "asyncio")
        argv = [PY, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "{port}"]
        argv += ["--loop", loop, "--no-access-log", "--log-level", "warning"]
        return self._start("uvicorn", env or bench_env(), argv=argv)

    def serve(self, app: str = APP, env: dict[str, str] | None = None) -> Worker:
        """The production launcher (daphne with the drain and the slow-client bound), as compose runs it."""
        return self._start("serve", env or bench_env(), server="realtime.serve", app=app)

    def redis(self) -> Worker:
        """A private redis-server on a free port (the reconnect workload restarts it: never the shared
        one): `stop()` is a restart's first half (SIGTERM), `start()` the second."""
        return self._start("redis", dict(os.environ), argv=redis_server_argv("{port}"))

    def websockets_baseline(self) -> Worker:
        argv = [PY, "-m", "bench.baseline_websockets", "--port", "{port}"]
        return self._start("websockets", bench_env(), argv=argv)

    def _start(self, name: str, env: dict[str, str], **launch) -> Worker:
        port = free_port()
        server = Worker(
            **launch,
            name=name,
            port=port,
            env=env,
            log_path=self.logdir / f"{name}-{port}.log",
            ready=None,  # listening is enough: a /readyz probe would warm the worker before it is measured
            stop_grace=10,
            own_session=True,
        )
        self.servers.append(server.start(30))
        return server


def start_django(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    stderr=subprocess.PIPE,
    module: str = "bench.django_side",
) -> subprocess.Popen:
    """Start `python -m MODULE ARGS` (bench.django_side) without waiting; `finish_django` collects it.

    A long-running command should get a file as `stderr`: nobody reads the pipe
    until it ends, and a full pipe would stall it.
    """
    argv = [PY, "-m", module, *args]
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
