"""What a workload's target is made of and the steps every target takes: the app and the server
to start, a channel-layer prefix of its own (its keys deleted after), the users' headers, its
load-generator processes (bench/client.py's `Client`), and connecting, healing and collecting
with them; a py-spy profile of the measured window on request (BENCH_PYSPY)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.client_procs import Clients
from bench.common import Stack, bench_env, redis_client
from bench.stats import lat_stats
from realtime.launcher import Worker

SERVICE_APP = "config.asgi:application"
CHANNELS_APP = "bench.baseline_channels:application"

# redis-py 8 caps an asyncio pool at 100 connections and raises MaxConnectionsError past it
# instead of waiting; channels_redis does a group_add per handshake, so 100 handshakes in
# flight break the plain-Channels baseline under uvicorn (measured; see docs/benchmarks.md).
FANOUT_CONNECT_CONCURRENCY = 25


def new_prefix() -> str:
    return f"bench-{uuid.uuid4().hex[:8]}"


def drop_prefix(prefix: str) -> None:
    """Delete the channel-layer keys of one target (nothing else in the Redis db)."""
    client = redis_client()
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])


def headers_for(prep: dict, port: int, indices) -> list[list[tuple[str, str]]]:
    origin = f"http://127.0.0.1:{port}"
    name = prep["cookie_name"]
    return [[("Origin", origin), ("Cookie", f"{name}={prep['cookies'][i]}")] for i in indices]


def chunks(indices: list[int], parts: int) -> list[list[int]]:
    step = -(-len(indices) // parts)
    return [indices[i * step : (i + 1) * step] for i in range(parts)]


def merge_collect(results: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "received",
        "expected",
        "duplicates",
        "out_of_order",
        "short_sockets",
        "error_frames",
        "lost_sockets",
        "dead_before_start",
        "sockets_at_start",
    )
    out: dict[str, Any] = {k: sum(r[k] for r in results) for k in keys}
    out["unexpected_closes"] = sum(r["unexpected_closes"] for r in results)
    out["timed_out"] = any(r["timed_out"] for r in results)
    out["stalled"] = any(r["stalled"] for r in results)
    out["last_ns"] = max(r["last_ns"] for r in results)
    firsts = [r["first_ns"] for r in results if r["first_ns"]]
    out["first_ns"] = min(firsts) if firsts else 0
    out["error_samples"] = [s for r in results for s in r["error_samples"]][:5]
    out["client_cpu_s"] = [round(r["client_cpu_s"], 3) for r in results]
    out["client_wall_s"] = [round(r["client_wall_s"], 3) for r in results]
    out["all_delivered"] = (
        out["received"] == out["expected"]
        and not out["duplicates"]
        and not out["short_sockets"]
        and not out["lost_sockets"]
        and not out["dead_before_start"]
    )
    out.update(lat_stats([r["lat"] for r in results]))
    return out


def connect(
    clients: Clients, url: str, mode: str, tag: str, per_proc_headers, timeout=60.0, concurrency=100
) -> dict:
    specs = [
        {"url": url, "mode": mode, "tag": tag, "headers": h, "concurrency": concurrency, "timeout": timeout}
        for h in per_proc_headers
    ]
    answers = clients.all("connect", specs)
    errors: dict[str, int] = {}
    for a in answers:
        for k, v in a["errors"].items():
            errors[k] = errors.get(k, 0) + v
    connected = sum(a["connected"] for a in answers)
    return {"connected": connected, "errors": errors, "seconds": max(a["seconds"] for a in answers)}


def heal(clients: Clients, quiet: float) -> int:
    """Reopen sockets the server dropped while connecting; returns how many were reopened."""
    healed = sum(a["healed"] for a in clients.all("heal", [None] * len(clients.procs), timeout=300))
    if healed:
        clients.all("settle", [(quiet, 60.0)] * len(clients.procs), timeout=90)
    return healed


def drop_times(res: dict[str, Any]) -> dict[str, Any]:
    """The collected first and last receipt times are the clients' clock: only differences are figures."""
    for k in ("first_ns", "last_ns"):
        res.pop(k)
    return res


def start_server(stack: Stack, server: str, app: str, env: dict[str, str]) -> Worker:
    if server == "daphne":
        return stack.daphne(app, env)
    if server == "uvicorn":
        return stack.uvicorn(app, env)
    if server == "serve":
        return stack.serve(app, env)
    if server == "websockets":
        return stack.websockets_baseline()
    raise ValueError(server)


@dataclasses.dataclass
class OneService:
    """One service (or baseline) worker and its load generators, for one target."""

    server: Worker
    clients: Clients
    env: dict[str, str]
    tag: str  # the run's users and frames carry it
    log: str = ""  # the worker's log tail, kept as the stack stops


@contextlib.contextmanager
def one_service(
    server_kind: str,
    app: str = SERVICE_APP,
    n_clients: int = 1,
    factory: str = "bench.client:Client",
    make_env: Callable[[str], dict[str, str]] | None = None,
) -> Iterator[OneService]:
    """The skeleton every one-worker target shares: a fresh layer prefix (deleted after), the worker
    started on it, `n_clients` load-generator processes, and the worker's log tail kept on exit."""
    prefix = new_prefix()
    env = make_env(prefix) if make_env else bench_env(CHANNEL_LAYER_PREFIX=prefix)
    tag = uuid.uuid4().hex[:8]
    with Stack() as stack, Clients(n_clients, factory=factory) as clients:
        run = None
        try:
            run = OneService(start_server(stack, server_kind, app, env), clients, env, tag)
            yield run
        finally:
            if run is not None:
                run.log = stack.servers[0].log_tail() if stack.servers else ""
            drop_prefix(prefix)


@contextlib.contextmanager
def profiled(server: Worker, name: str):
    """With BENCH_PYSPY=DIR, a py-spy profile of the server over the measured window only.

    Written as DIR/<target>.raw (collapsed stacks); a development aid, never on by default.
    BENCH_PYSPY_ARGS adds py-spy options, e.g. `--nonblocking` (the worker is not paused
    for each sample: a truer picture of a busy worker) or `--gil` (only the thread holding
    the GIL: where the Python CPU goes).
    """
    out_dir = os.environ.get("BENCH_PYSPY")
    if not out_dir:
        yield
        return
    py_spy = Path(sys.executable).with_name("py-spy")
    path = Path(out_dir) / f"{name}.raw"
    argv = [str(py_spy), "record", "-p", str(server.pid), "-r", "400", "-f", "raw", "-o", str(path)]
    argv += os.environ.get("BENCH_PYSPY_ARGS", "").split()
    errors = (Path(out_dir) / f"{name}.err").open("wb")
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errors)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        spy.wait(timeout=30)
        errors.close()
