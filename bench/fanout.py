"""The `fanout` workload: one room of N sockets, one poster's burst of M messages, every member
gets each; deliveries per second and latency, against plain Channels and a plain `websockets`
server. The run whose burst goes out while the room still fills is bench/fanout_overlap.py."""

from __future__ import annotations

from typing import Any

from bench.common import proc_cpu_seconds
from bench.fanout_overlap import OVERLAP_TARGETS, overlap_target
from bench.stats import rate_ratios
from bench.targets import (
    CHANNELS_APP,
    FANOUT_CONNECT_CONCURRENCY,
    SERVICE_APP,
    chunks,
    connect,
    drop_times,
    headers_for,
    heal,
    merge_collect,
    one_service,
    profiled,
)
from bench.workloads import Skip, each_target, size

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
        conn = connect(clients, url, mode, tag, per_proc, concurrency=FANOUT_CONNECT_CONCURRENCY)
        if conn["connected"] != n:
            raise RuntimeError(f"{name}: {conn['connected']}/{n} sockets connected: {conn['errors']}")
        quiet = 1.0 if mode == "chat" else 0.3
        settle = clients.all("settle", [(quiet, 60.0)] * n_clients, timeout=90)
        reopened = heal(clients, quiet)
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
    return drop_times(res)


def fanout(prep: dict, quick: bool) -> dict[str, Any]:
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
    pairs = [
        ("service_daphne_vs_channels_daphne", "service-daphne", "channels-daphne", 3),
        ("service_uvicorn_vs_websockets", "service-uvicorn", "websockets", 3),
        ("channels_daphne_vs_websockets", "channels-daphne", "websockets", 4),
        ("websockets_2clients_vs_1client", "websockets-2clients", "websockets", 3),
    ]
    for server in ("daphne", "uvicorn"):
        key = f"service_{server}_overlap_vs_channels_{server}_overlap"
        pairs.append((key, f"service-{server}-overlap", f"channels-{server}-overlap", 3))
    return {"targets": targets, "ratios": rate_ratios(targets, pairs)}
