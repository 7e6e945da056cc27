"""The steps of one soak run (bench/soak.py runs them in order): every client connects, the load
runs (the notify() driver, posts and churn, sampled as it goes), everyone comes back and empties
its outbox, and every client's ids are checked against the database's; then the run's verdict."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import time
from array import array
from typing import Any

from bench.client_procs import Clients
from bench.common import Stack, finish_django, run_django, start_django
from bench.soak_sampler import Sampler
from bench.stats import lat_stats


def merge_check(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The clients' `converge` answers as one: counts summed, lists joined, the slowest
    convergence, and the post-acknowledgement percentiles."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key in ("ack", "converge_s"):
                continue
            if isinstance(value, dict):
                bucket = out.setdefault(key, {})
                for k, v in value.items():
                    bucket[str(k)] = bucket.get(str(k), 0) + v
            elif isinstance(value, list):
                out.setdefault(key, []).extend(value)
            else:
                out[key] = out.get(key, 0) + value
    out["gap_samples"] = out.get("gap_samples", [])[:10]
    out["converge_s"] = round(max(p["converge_s"] for p in parts), 2)
    ack = array("q")
    for part in parts:
        ack.frombytes(part["ack"])
    stats = lat_stats([ack.tobytes()])
    out["post_ack_p50_ms"] = round(stats["latency_p50_ms"], 1)
    out["post_ack_p99_ms"] = round(stats["latency_p99_ms"], 1)
    return out


@dataclasses.dataclass
class SoakRun:
    """What the steps of one soak run share."""

    args: argparse.Namespace
    tag: str
    env: dict[str, str]
    users: int
    seconds: float
    rooms: list
    servers: list
    agents: list[dict[str, Any]]
    parts: list[list[dict[str, Any]]]
    clients: Clients


def connect_all(
    clients: Clients, parts: list[list[dict[str, Any]]], tag: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Step 1: every client process opens its agents' sockets; all of them must connect."""
    starts = clients.all(
        "start",
        [
            {
                "run": tag,
                "agents": part,
                "index_base": sum(len(p) for p in parts[:k]),
                "concurrency": args.connect_concurrency,
                "timeout": 30.0,
                "connect_limit": 300.0,
                "seed": k,
            }
            for k, part in enumerate(parts)
        ],
        timeout=400,
    )
    connect = {
        "agents": sum(s["agents"] for s in starts),
        "connected": sum(s["connected"] for s in starts),
        "seconds": round(max(s["seconds"] for s in starts), 2),
        "errors": {k: v for s in starts for k, v in s["errors"].items()},
    }
    print(f"connected {connect['connected']}/{connect['agents']} in {connect['seconds']} s", flush=True)
    if connect["connected"] < connect["agents"]:
        raise RuntimeError(f"only {connect['connected']}/{connect['agents']} sockets connected: {connect}")
    return connect


def run_load(soak: SoakRun, cleanup: contextlib.ExitStack, stack: Stack, sampler: Sampler) -> dict[str, Any]:
    """Step 2: the notify() driver in its own process, the clients' posts and churn, sampled as it goes.

    Returns the driver's figures."""
    args, users, agents, parts, seconds = soak.args, soak.users, soak.agents, soak.parts, soak.seconds
    driver_log = stack.logdir / "driver.log"
    driver_args = ["push", soak.tag, str(args.notify_rate), str(seconds), str(users)]
    driver_args += [str(args.group_every), str(min(args.group_size, users))]
    log_file = cleanup.enter_context(driver_log.open("w"))
    driver = start_django(driver_args, env=soak.env, stderr=log_file)
    cleanup.callback(lambda: driver.poll() is None and driver.kill())
    churn_per_s = args.churn / 100 * len(agents) / 60
    post_per_s = args.chat_rate * len(soak.rooms)
    soak.clients.all(
        "load",
        [
            {
                "seconds": seconds,
                "post_rate": post_per_s * sum(a["kind"] == "chat" for a in part) / users,
                "churn_rate": churn_per_s * len(part) / len(agents),
            }
            for part in parts
        ],
    )
    t_load = time.monotonic()
    end = t_load + seconds
    next_sample = t_load + args.sample_every
    while next_sample < end:
        time.sleep(max(0.0, next_sample - time.monotonic()))
        for server in soak.servers:
            if not server.running:
                raise RuntimeError(f"worker {server.port} exited:\n{server.log_tail()}")
        sampler.take("load", soak.clients)
        next_sample += args.sample_every
    time.sleep(max(0.0, end - time.monotonic()))
    soak.clients.all("stop_load", [None] * len(parts))
    figures = finish_django(driver, driver_args, timeout=300)
    figures.pop("counts", None)
    sampler.take("load", soak.clients)
    return figures


def quiesce(soak: SoakRun) -> dict[str, Any]:
    """Step 3: everyone back and every outbox empty, so that the database is final."""
    quiet = soak.clients.all("quiesce", [60.0] * len(soak.parts), timeout=120)
    return {
        "waited_s": round(max(q["waited_s"] for q in quiet), 2),
        "not_live": sum(q["not_live"] for q in quiet),
        "outbox": sum(q["outbox"] for q in quiet),
    }


def check_ids(soak: SoakRun, prep: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    """Step 4: every client compares what it holds with the database's final messages and notifications."""
    spec = {
        "rooms": soak.rooms,
        "users": prep["user_ids"][: soak.users],
        "floor_message": floor["floor_message"],
        "floor_notification": floor["floor_notification"],
        "client_id_prefix": f"{soak.tag}-",
    }
    db = run_django(["ids", json.dumps(spec)], env=soak.env)
    expect = {"messages": db["messages"], "notifications": db["notifications"], "limit": 60.0}
    check = merge_check(soak.clients.all("converge", [expect] * len(soak.parts), timeout=120))
    check["posts_stored"] = db["posts_stored"]
    check["messages_in_db"] = sum(len(v) for v in db["messages"].values())
    check["notifications_in_db"] = sum(len(v) for v in db["notifications"].values())
    return check


def deliveries(sampler: Sampler, seconds: float) -> dict[str, Any]:
    """Live deliveries during the load and their latency, from the samples."""
    samples = sampler.samples
    lat = lat_stats([sampler.latencies.tobytes()])
    loaded = [s for s in samples if s["phase"] == "load"]
    delivered_total = loaded[-1]["clients"]["delivered"] - samples[1]["clients"]["delivered"]
    return {
        "live_deliveries_timed": len(sampler.latencies),
        "delivered_during_load": delivered_total,
        "per_s": round(delivered_total / seconds, 1),
        **{k: round(v, 1) for k, v in lat.items()},
    }


def passed(c: dict[str, Any]) -> bool:
    """No gap, duplicate or phantom, everyone live at the end, and every acknowledged post stored."""
    return bool(
        c["gaps"] == 0
        and c["duplicates"] == 0
        and c["phantoms"] == 0
        and c["never_connected"] == 0
        and c["not_live_at_end"] == 0
        and c["outbox_left"] == 0
        and c["posts_stored"] == c["posts_acked"]
        and c["expected"] > 0
    )
