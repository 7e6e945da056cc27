"""The notification workloads, all on /ws/notifications/: `push` (notify() to one user at a
steady rate: latency), `broadcast` (one notify() to every user: commit to last receipt) and
`idle` (many open sockets: memory and CPU per socket and per handshake)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.common import proc_cpu_seconds, proc_rss_kib, run_django
from bench.targets import connect, drop_times, headers_for, heal, merge_collect, one_service, profiled
from bench.workloads import size
from realtime.launcher import Worker


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
        conn = connect(clients, url, "notif", tag, [headers_for(prep, server.port, range(n))])
        if conn["connected"] < n * 0.9:
            raise RuntimeError(f"{workload}: {conn['connected']}/{n} connected: {conn['errors']}")
        clients.all("settle", [settle])
        reopened = heal(clients, settle[0])
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


# --- push latency -----------------------------------------------------------------------------
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
        out[server_kind] = drop_times(res)
    return {"targets": out}


# --- broadcast -------------------------------------------------------------------------------
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
        out[server_kind] = drop_times(res)
    return {"targets": out}


# --- idle sockets ----------------------------------------------------------------------------
def idle(prep: dict, quick: bool, servers=("daphne", "uvicorn")) -> dict[str, Any]:
    n = size("idle_sockets", quick)
    warm = min(50, n // 2)
    out = {}
    for server_kind in servers:
        with one_service(server_kind) as run:
            server, clients, tag = run.server, run.clients, run.tag
            url = f"ws://127.0.0.1:{server.port}/ws/notifications/"
            # Warm up first (imports, pools, first queries), then measure the rest.
            first = connect(clients, url, "notif", tag, [headers_for(prep, server.port, range(warm))])
            time.sleep(1.0)
            rss0 = proc_rss_kib(server.pid)
            cpu0 = proc_cpu_seconds(server.pid)
            with profiled(server, f"idle-{server_kind}"):
                conn = connect(
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
