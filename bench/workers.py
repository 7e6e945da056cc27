"""The `workers` workload: one room across two daphne workers, one poster; the Redis commands a
message costs at two room sizes (idle polling subtracted), and whether every member got it."""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench.client_procs import Clients
from bench.common import Stack, bench_env, redis_calls
from bench.targets import (
    CHANNELS_APP,
    FANOUT_CONNECT_CONCURRENCY,
    SERVICE_APP,
    drop_prefix,
    headers_for,
    heal,
    merge_collect,
    new_prefix,
)
from bench.workloads import size
from realtime.launcher import Worker


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
                reopened = heal(clients, 1.0)
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
