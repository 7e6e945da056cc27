"""The bench's workloads (joins: bench/joins.py; ticker: bench/ticker.py; reconnect: bench/reconnect.py).

Each returns a dict of figures (no printing)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.client_procs import Clients
from bench.common import (
    Stack,
    bench_env,
    proc_cpu_seconds,
    proc_rss_kib,
    redis_calls,
    redis_client,
    run_django,
)
from bench.stats import lat_stats
from realtime.launcher import Worker

SERVICE_APP = "config.asgi:application"
CHANNELS_APP = "bench.baseline_channels:application"

SIZES = {
    # name: (full, quick)
    "fanout_sockets": (1000, 20),
    "fanout_messages": (100, 5),
    "push_users": (1000, 20),
    "push_rate": (200, 20),
    "push_seconds": (20, 1),
    "broadcast_users": (5000, 20),
    "idle_sockets": (10000, 50),
    "workers_sizes": ((100, 1000), (10, 20)),
    "workers_messages": (20, 5),
    # joins (bench/joins.py): room sizes, joins per second over both workers, the
    # poster's messages per second during the storm, and its messages after the joins.
    "joins_sizes": ((500, 1000, 2000, 5000), (12,)),
    "joins_rate": (100, 100),
    "joins_post_rate": (10, 10),
    "joins_after_posts": (20, 5),
    # ticker (bench/ticker.py): subscribers, topics, topics each follows, values published per
    # second over all topics and for how long; subscribers that stop reading, for how long
    # (from a third of the way in); load-generator processes.
    "ticker_subscribers": (1000, 20),
    "ticker_topics": (500, 20),
    "ticker_follow": (50, 5),
    "ticker_rate": (1000, 100),
    "ticker_seconds": (30, 2),
    "ticker_slow": (10, 2),
    "ticker_pause": (10, 1),
    "ticker_clients": (2, 1),
    # reconnect (bench/reconnect.py): sockets (one user each, half per worker), chat rooms they
    # spread over, each storm's deadline, the publisher's notifications and chat posts per second
    # during a storm, load-generator processes; the hub's heartbeat, its timeout and the drain's
    # grace (the production defaults at full size, shorter for the smoke run).
    "reconnect_users": (10000, 8),
    "reconnect_rooms": (10, 1),
    "reconnect_deadline_s": (120, 30),
    "reconnect_note_rate": (20, 20),
    "reconnect_chat_rate": (2, 5),
    "reconnect_clients": (2, 1),
    "reconnect_heartbeat_ms": (5000, 500),
    "reconnect_heartbeat_timeout_ms": (10000, 2000),
    "reconnect_drain_grace_ms": (2000, 200),
}


class Skip(Exception):
    """A target that cannot run (e.g. config.routing has no chat endpoint)."""


def size(name: str, quick: bool):
    full, small = SIZES[name]
    # While working on one workload, e.g. BENCH_IDLE_SOCKETS=2000 or BENCH_JOINS_SIZES=200,500.
    override = os.environ.get(f"BENCH_{name.upper()}")
    if override and isinstance(full, int):
        return int(override)
    if override and isinstance(full, tuple):
        return tuple(int(x) for x in override.split(","))
    return small if quick else full


def only_targets(variable: str) -> list[str]:
    """The targets named in an environment variable (comma-separated), or [] for all."""
    return [n for n in os.environ.get(variable, "").split(",") if n]


def each_target(names: list[str], variable: str, run: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """`run(name)` for each target (those named in `variable`, if set): its result, or why it has none."""
    only = only_targets(variable)
    results: dict[str, Any] = {}
    for name in (n for n in names if not only or n in only):
        try:
            results[name] = run(name)
        except Skip as exc:
            results[name] = {"skipped": str(exc)}
        except Exception as exc:
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return results


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


def _connect(
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


def _heal(clients: Clients, quiet: float) -> int:
    """Reopen sockets the server dropped while connecting; returns how many were reopened."""
    healed = sum(a["healed"] for a in clients.all("heal", [None] * len(clients.procs), timeout=300))
    if healed:
        clients.all("settle", [(quiet, 60.0)] * len(clients.procs), timeout=90)
    return healed


def _start(stack: Stack, server: str, app: str, env: dict[str, str]) -> Worker:
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
            run = OneService(_start(stack, server_kind, app, env), clients, env, tag)
            yield run
        finally:
            if run is not None:
                run.log = stack.servers[0].log_tail() if stack.servers else ""
            drop_prefix(prefix)


# --- 1. fan-out ----------------------------------------------------------------------------------
FANOUT_TARGETS = {
    # name: (server, app, path, client mode, client processes)
    "service-daphne": ("daphne", SERVICE_APP, "/ws/chat/lobby/", "chat", 1),
    "service-uvicorn": ("uvicorn", SERVICE_APP, "/ws/chat/lobby/", "chat", 1),
    "channels-daphne": ("daphne", CHANNELS_APP, "/ws/baseline/lobby/", "tutorial", 1),
    "channels-uvicorn": ("uvicorn", CHANNELS_APP, "/ws/baseline/lobby/", "tutorial", 1),
    "websockets": ("websockets", "", "/ws/baseline/lobby/", "tutorial", 1),
    # The same server with the load split over two generator processes: when the figure
    # does not rise, one generator process is not the bottleneck.
    "websockets-2clients": ("websockets", "", "/ws/baseline/lobby/", "tutorial", 2),
}


# redis-py 8 caps an asyncio pool at 100 connections and raises MaxConnectionsError past it
# instead of waiting; channels_redis does a group_add per handshake, so 100 handshakes in
# flight break the plain-Channels baseline under uvicorn (measured; see docs/benchmarks.md).
FANOUT_CONNECT_CONCURRENCY = 25


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


def fanout_target(name: str, prep: dict, quick: bool) -> dict[str, Any]:
    server_kind, app, path, mode, n_clients = FANOUT_TARGETS[name]
    if mode == "chat" and not prep["chat"]:
        raise Skip("chat endpoint /ws/chat/<slug>/ is not in config.routing")
    n = size("fanout_sockets", quick)
    m = size("fanout_messages", quick)
    with one_service(server_kind, app, n_clients) as run:
        server, clients, tag = run.server, run.clients, run.tag
        url = f"ws://127.0.0.1:{server.port}{path}"
        # At most FANOUT_CONNECT_CONCURRENCY handshakes in flight: connecting is not what
        # this workload measures (see the idle workload), delivering is.
        per_proc = [headers_for(prep, server.port, c) for c in chunks(list(range(n)), n_clients)]
        conn = _connect(clients, url, mode, tag, per_proc, concurrency=FANOUT_CONNECT_CONCURRENCY)
        if conn["connected"] != n:
            raise RuntimeError(f"{name}: {conn['connected']}/{n} sockets connected: {conn['errors']}")
        quiet = 1.0 if mode == "chat" else 0.3
        settle = clients.all("settle", [(quiet, 60.0)] * n_clients, timeout=90)
        reopened = _heal(clients, quiet)
        clients.all("mark", [None] * n_clients)
        cpu0 = proc_cpu_seconds(server.pid)
        with profiled(server, name):
            sent = clients.procs[0].call(
                "post", {"count": m, "format": "chat" if mode == "chat" else "tutorial"}
            )
            res = merge_collect(
                clients.all(
                    "collect",
                    [
                        {"expected": len(c) * m, "expected_each": m, "timeout": 300}
                        for c in chunks(list(range(n)), n_clients)
                    ],
                    timeout=400,
                )
            )
        cpu1 = proc_cpu_seconds(server.pid)
    span = (res["last_ns"] - sent["t_first_send"]) / 1e9
    res.update(
        {
            "server": server_kind,
            "command": server.command(),
            "sockets": n,
            "messages": m,
            "client_processes": n_clients,
            "connect_s": round(conn["seconds"], 3),
            "settle_s": round(settle[0]["waited_s"], 3),
            "reopened_before_start": reopened,
            "seconds": round(span, 4),
            "deliveries_per_s": round(res["received"] / span, 1) if span > 0 else 0.0,
            "server_cpu_s": round(cpu1 - cpu0, 3),
        }
    )
    if not res["all_delivered"]:
        res["server_log_tail"] = run.log
    return _drop_times(res)


def fanout(prep: dict, quick: bool) -> dict[str, Any]:
    from bench.joins import OVERLAP_TARGETS, overlap_target  # bench.joins imports this module

    targets = {}
    names = [*FANOUT_TARGETS, *OVERLAP_TARGETS]
    if quick:
        # The smoke run (make test): the overlap's code is the same under either server.
        for name in ("websockets-2clients", "service-uvicorn-overlap", "channels-uvicorn-overlap"):
            names.remove(name)
    # While working on one target: BENCH_FANOUT_TARGETS=service-daphne,channels-daphne
    targets.update(
        each_target(
            names,
            "BENCH_FANOUT_TARGETS",
            lambda name: (overlap_target if name in OVERLAP_TARGETS else fanout_target)(name, prep, quick),
        )
    )
    rate = {k: v.get("deliveries_per_s") for k, v in targets.items()}
    ratios = {}
    if rate.get("service-daphne") and rate.get("channels-daphne"):
        ratios["service_daphne_vs_channels_daphne"] = round(
            rate["service-daphne"] / rate["channels-daphne"], 3
        )
    if rate.get("service-uvicorn") and rate.get("websockets"):
        ratios["service_uvicorn_vs_websockets"] = round(rate["service-uvicorn"] / rate["websockets"], 3)
    if rate.get("channels-daphne") and rate.get("websockets"):
        ratios["channels_daphne_vs_websockets"] = round(rate["channels-daphne"] / rate["websockets"], 4)
    if rate.get("websockets-2clients") and rate.get("websockets"):
        ratios["websockets_2clients_vs_1client"] = round(rate["websockets-2clients"] / rate["websockets"], 3)
    for server in ("daphne", "uvicorn"):
        ours, theirs = rate.get(f"service-{server}-overlap"), rate.get(f"channels-{server}-overlap")
        if ours and theirs:
            ratios[f"service_{server}_overlap_vs_channels_{server}_overlap"] = round(ours / theirs, 3)
    return {"targets": targets, "ratios": ratios}


def _notifications_pass(
    prep: dict,
    server_kind: str,
    n: int,
    workload: str,
    settle: tuple[float, float],
    drive: Callable[[str, dict[str, str]], tuple[dict[str, Any], dict[str, Any]]],
) -> tuple[Worker, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """What push and broadcast share: one server on its own layer prefix, n notification sockets open,
    settled and healed, then `drive(tag, env)` (the Django driver; it returns its figures and the
    clients' collect arguments) and the deliveries collected.

    Returns the server, the connect step's figures, the driver's figures and the collected deliveries."""
    with one_service(server_kind) as run:
        server, clients, env, tag = run.server, run.clients, run.env, run.tag
        url = f"ws://127.0.0.1:{server.port}/ws/notifications/"
        conn = _connect(clients, url, "notif", tag, [headers_for(prep, server.port, range(n))])
        if conn["connected"] < n * 0.9:
            raise RuntimeError(f"{workload}: {conn['connected']}/{n} connected: {conn['errors']}")
        clients.all("settle", [settle])
        reopened = _heal(clients, settle[0])
        clients.all("mark", [None])
        driver, collect = drive(tag, env)
        res = merge_collect(clients.all("collect", [collect]))
    connected = {
        "connect_s": round(conn["seconds"], 3),
        "connected": conn["connected"],
        "connect_errors": conn["errors"],
        "reopened_before_start": reopened,
    }
    return server, connected, driver, res


def _drop_times(res: dict[str, Any]) -> dict[str, Any]:
    """The collected first and last receipt times are the clients' clock: only differences are figures."""
    for k in ("first_ns", "last_ns"):
        res.pop(k)
    return res


# --- 2. push latency -----------------------------------------------------------------------------
def push(prep: dict, quick: bool, servers=("daphne", "uvicorn")) -> dict[str, Any]:
    n = size("push_users", quick)
    rate = size("push_rate", quick)
    seconds = size("push_seconds", quick)
    out = {}
    for server_kind in servers:

        def drive(tag: str, env: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
            args = ["push", tag, str(rate), str(seconds), str(n)]
            driver = run_django(args, env=env, timeout=seconds * 10 + 120)
            return driver, {"per_socket": driver.pop("counts"), "timeout": 60}

        server, connected, driver, res = _notifications_pass(prep, server_kind, n, "push", (0.3, 10.0), drive)
        res.update(
            {
                "server": server_kind,
                "command": server.command(),
                "users": n,
                "rate_per_s": rate,
                "duration_s": seconds,
                **connected,
                "driver": driver,
            }
        )
        out[server_kind] = _drop_times(res)
    return {"targets": out}


# --- 3. broadcast -------------------------------------------------------------------------------
def broadcast(prep: dict, quick: bool, servers=("daphne", "uvicorn")) -> dict[str, Any]:
    n = size("broadcast_users", quick)
    out = {}
    for server_kind in servers:

        def drive(tag: str, env: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
            driver = run_django(["broadcast", tag], env=env, timeout=300)
            return driver, {"expected": n, "expected_each": 1, "timeout": 120}

        server, connected, driver, res = _notifications_pass(
            prep, server_kind, n, "broadcast", (0.5, 20.0), drive
        )
        commit = driver["t_commit"]
        res.update(
            {
                "server": server_kind,
                "command": server.command(),
                "users": n,
                "recipients": driver["recipients"],
                **connected,
                "call_to_commit_ms": round((commit - driver["t_call"]) / 1e6, 2),
                "commit_to_return_ms": round((driver["t_return"] - commit) / 1e6, 2),
                "commit_to_first_receipt_ms": round((res["first_ns"] - commit) / 1e6, 2)
                if res["first_ns"]
                else None,
                "commit_to_last_receipt_ms": round((res["last_ns"] - commit) / 1e6, 2)
                if res["last_ns"]
                else None,
            }
        )
        out[server_kind] = _drop_times(res)
    return {"targets": out}


# --- 4. idle sockets ----------------------------------------------------------------------------
def idle(prep: dict, quick: bool, servers=("daphne", "uvicorn")) -> dict[str, Any]:
    n = size("idle_sockets", quick)
    warm = min(50, n // 2)
    out = {}
    for server_kind in servers:
        with one_service(server_kind) as run:
            server, clients, tag = run.server, run.clients, run.tag
            url = f"ws://127.0.0.1:{server.port}/ws/notifications/"
            # Warm up first (imports, pools, first queries), then measure the rest.
            first = _connect(clients, url, "notif", tag, [headers_for(prep, server.port, range(warm))])
            time.sleep(1.0)
            rss0 = proc_rss_kib(server.pid)
            cpu0 = proc_cpu_seconds(server.pid)
            with profiled(server, f"idle-{server_kind}"):
                conn = _connect(
                    clients, url, "notif", tag, [headers_for(prep, server.port, range(warm, n))], timeout=120
                )
            cpu1 = proc_cpu_seconds(server.pid)
            time.sleep(2.0)
            hold = clients.all("settle", [(2.0, 10.0)])
            rss1 = proc_rss_kib(server.pid)
            res = merge_collect(clients.all("collect", [{"expected": 0, "timeout": 1, "linger": 1.0}]))
        measured = conn["connected"]
        errors = sum(first["errors"].values()) + sum(conn["errors"].values()) + res["unexpected_closes"]
        out[server_kind] = {
            "server": server_kind,
            "command": server.command(),
            "sockets": first["connected"] + measured,
            "requested": n,
            "rss_before_kib": rss0,
            "rss_after_kib": rss1,
            "rss_per_socket_kib": round((rss1 - rss0) / measured, 2) if measured else None,
            "handshakes_per_s": round(measured / conn["seconds"], 1) if conn["seconds"] else None,
            "connect_s": round(conn["seconds"], 3),
            "cpu_ms_per_handshake": round((cpu1 - cpu0) * 1000 / measured, 2) if measured else None,
            "errors": errors,
            "error_kinds": {**first["errors"], **conn["errors"]},
            "unexpected_closes": res["unexpected_closes"],
            "hold_s": round(hold[0]["waited_s"], 2),
        }
    return {"targets": out}


# --- 5. across workers --------------------------------------------------------------------------
def _calls_total(before: dict[str, int], after: dict[str, int]) -> tuple[int, dict[str, int]]:
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    delta = {k: v for k, v in delta.items() if v}
    return sum(delta.values()), dict(sorted(delta.items(), key=lambda kv: -kv[1])[:8])


def _connect_halves(
    clients: Clients, servers: tuple[Worker, Worker], path: str, mode: str, tag: str, prep: dict, n: int
) -> list[list[int]]:
    """Open n sockets, alternating between the two workers; all of them must connect.

    Returns the user indices on each worker (the poster, index 0, is on the first)."""
    halves = [list(range(0, n, 2)), list(range(1, n, 2))]
    specs = []
    for server, idx in zip(servers, halves, strict=True):
        specs.append(
            {
                "url": f"ws://127.0.0.1:{server.port}{path}",
                "mode": mode,
                "tag": tag,
                "headers": headers_for(prep, server.port, idx),
                "concurrency": FANOUT_CONNECT_CONCURRENCY,
                "timeout": 60.0,
            }
        )
    answers = clients.all("connect", specs)
    connected = sum(x["connected"] for x in answers)
    if connected != n:
        raise RuntimeError(f"workers: {connected}/{n} connected: {[x['errors'] for x in answers]}")
    return halves


def _idle_redis_rate() -> float:
    """Redis commands per second with nobody posting (idle polling, and anyone else on this server)."""
    idle0 = redis_calls()
    t_idle = time.monotonic()
    time.sleep(2.0)
    idle1 = redis_calls()
    return _calls_total(idle0, idle1)[0] / (time.monotonic() - t_idle)


def workers_target(name: str, app: str, path: str, mode: str, prep: dict, quick: bool) -> dict[str, Any]:
    m = size("workers_messages", quick)
    per_size = {}
    for n in size("workers_sizes", quick):
        prefix = new_prefix()
        # Presence heartbeats (one script per socket every 15 s) are upkeep that grows with
        # members whether or not anyone posts; over a posting window well under a second they
        # are bursty noise that the idle-rate subtraction cannot remove. Spaced out here, so the
        # count is what a message costs; docs/benchmarks.md says so.
        # (The settings refuse a TTL under two heartbeats.)
        env = bench_env(
            CHANNEL_LAYER_PREFIX=prefix, PRESENCE_HEARTBEAT_SECONDS="3600", PRESENCE_TTL_SECONDS="7200"
        )
        tag = uuid.uuid4().hex[:8]
        with Stack() as stack, Clients(2) as clients:
            try:
                a = stack.daphne(app, env)
                b = stack.daphne(app, env)
                halves = _connect_halves(clients, (a, b), path, mode, tag, prep, n)
                clients.all("settle", [(1.0, 60.0)] * 2, timeout=90)
                reopened = _heal(clients, 1.0)
                idle_rate = _idle_redis_rate()
                clients.all("mark", [None, None])
                before = redis_calls()
                t0 = time.monotonic()
                clients.procs[0].call(
                    "post", {"count": m, "format": "chat" if mode == "chat" else "tutorial"}
                )
                res = merge_collect(
                    clients.all(
                        "collect",
                        [{"expected": len(h) * m, "expected_each": m, "timeout": 300} for h in halves],
                        timeout=400,
                    )
                )
                after = redis_calls()
                dt = time.monotonic() - t0
            finally:
                drop_prefix(prefix)
        total, top = _calls_total(before, after)
        net = max(0.0, total - idle_rate * dt)
        per_size[str(n)] = {
            "members": n,
            "messages": m,
            "received": res["received"],
            "expected": res["expected"],
            "all_delivered": res["all_delivered"],
            "duplicates": res["duplicates"],
            "out_of_order": res["out_of_order"],
            "lost_sockets": res["lost_sockets"],
            "reopened_before_start": reopened,
            "redis_calls_raw": total,
            "idle_calls_per_s": round(idle_rate, 1),
            "window_s": round(dt, 3),
            "redis_commands_per_message": round(net / m, 1),
            "top_commands": top,
            "command": f"{a.command()}  +  {b.command()}",
        }
    sizes = sorted(per_size.values(), key=lambda r: r["members"])
    growth = None
    if len(sizes) >= 2 and sizes[0]["redis_commands_per_message"]:
        growth = round(sizes[-1]["redis_commands_per_message"] / sizes[0]["redis_commands_per_message"], 2)
    return {"sizes": per_size, "growth_small_to_large": growth}


def workers(prep: dict, quick: bool) -> dict[str, Any]:
    out = {}
    if prep["chat"]:
        out["service-daphne-x2"] = workers_target(
            "service", SERVICE_APP, "/ws/chat/lobby/", "chat", prep, quick
        )
    else:
        out["service-daphne-x2"] = {"skipped": "chat endpoint /ws/chat/<slug>/ is not in config.routing yet"}
    out["channels-daphne-x2"] = workers_target(
        "channels", CHANNELS_APP, "/ws/baseline/lobby/", "tutorial", prep, quick
    )
    return {"targets": out}


def joins(prep: dict, quick: bool) -> dict[str, Any]:
    from bench.joins import joins as run_joins  # bench.joins imports this module

    return run_joins(prep, quick)


def ticker(prep: dict, quick: bool) -> dict[str, Any]:
    from bench.ticker import ticker as run_ticker  # bench.ticker imports this module

    return run_ticker(prep, quick)


def reconnect(prep: dict, quick: bool) -> dict[str, Any]:
    from bench.reconnect import reconnect as run_reconnect  # bench.reconnect imports this module

    return run_reconnect(prep, quick)


WORKLOADS = {
    "fanout": (fanout, "fanout_sockets"),
    "push": (push, "push_users"),
    "broadcast": (broadcast, "broadcast_users"),
    "idle": (idle, "idle_sockets"),
    "workers": (workers, "workers_sizes"),
    "joins": (joins, "joins_sizes"),
    "ticker": (ticker, "ticker_subscribers"),
    "reconnect": (reconnect, "reconnect_users"),
}


def users_needed(name: str, quick: bool) -> int:
    value = size(WORKLOADS[name][1], quick)
    return max(value) if isinstance(value, tuple) else value


def run(name: str, quick: bool) -> dict[str, Any]:
    """Prepare exactly the users this workload needs, then run it."""
    prep = run_django(["prepare", str(users_needed(name, quick))])
    func = WORKLOADS[name][0]
    return func(prep, quick)
