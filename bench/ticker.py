"""The `ticker` workload (issue 17): many subscribers of many live topics, values published at a steady rate.

N subscribers (bench users, one socket each) follow F of T topics each (the same
seeded choice on every target); a publisher process (`bench.ticker_publish`) sends
RATE values a second over all topics for SECONDS. Figures: delivery latency
(publish time in the value → receipt), deliveries per second, the worker's CPU.
Meanwhile SLOW subscribers stop reading for PAUSE seconds (from a third of the
way in): what the server holds for them (the service's `relay_live_buffered_bytes`,
and the worker's RSS growth) and the age of the values they see when they read again.

Targets: the service (`/ws/live/`, `live.services.publish_topic`), plain Channels
(one group per topic, `group_send`) and a raw `websockets` server (`broadcast`).
"""

from __future__ import annotations

import select
import statistics
import time
import urllib.request
from typing import Any

from bench.common import bench_env, finish_django, proc_cpu_seconds, proc_rss_kib, start_django
from bench.stats import lat_stats, rate_ratios
from bench.targets import CHANNELS_APP, SERVICE_APP, OneService, chunks, headers_for, one_service
from bench.ticker_client import publishes_per_topic
from bench.workloads import each_target, size

TARGETS = {
    # name: (server, app, subscribers' path, publisher)
    "service-daphne": ("daphne", SERVICE_APP, "/ws/live/", "service"),
    "channels-daphne": ("daphne", CHANNELS_APP, "/ws/baseline-ticker/", "channels"),
    "websockets": ("websockets", "", "/ws/ticker/", "websockets"),
}
PUBLISHER = "bench.ticker_publish"


def ticker_env(prefix: str) -> dict[str, str]:
    # Topic values under the target's prefix too, so they are deleted with its channel-layer keys.
    return bench_env(CHANNEL_LAYER_PREFIX=prefix, LIVE_KEY_PREFIX=f"{prefix}-live")


def buffered_bytes(port: int) -> float | None:
    """The worker's `relay_live_buffered_bytes` from /metrics (loopback needs no token).

    None when the worker does not answer within 10 s: a finding (its event loop
    is that far behind), reported as such rather than ending the run.
    """
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith("relay_live_buffered_bytes "):
                    return float(line.split()[1])
    except OSError:  # TimeoutError included
        return None
    return None


def _wait_ready(proc, limit: float = 60.0) -> None:
    """The publisher prints `ready` once set up (Django, connections) and about to publish."""
    readable, _, _ = select.select([proc.stdout], [], [], limit)
    line = proc.stdout.readline() if readable else ""
    if line.strip() != "ready":
        proc.kill()
        raise RuntimeError(
            f"publisher not ready: {line!r} {proc.stderr.read()[-2000:] if proc.stderr else ''}"
        )


def _subscribe(run: OneService, name: str, prep: dict, quick: bool) -> dict[str, Any]:
    n = size("ticker_subscribers", quick)
    path = TARGETS[name][2]
    parts = chunks(list(range(n)), len(run.clients.procs))
    specs = [
        {
            "url": f"ws://127.0.0.1:{run.server.port}{path}",
            "indices": part,
            "headers": headers_for(prep, run.server.port, part),
            "topics": size("ticker_topics", quick),
            "follow": size("ticker_follow", quick),
            "concurrency": 25,
            "timeout": 60.0,
        }
        for part in parts
    ]
    answers = run.clients.all("connect", specs)
    connected = sum(a["connected"] for a in answers)
    errors: dict[str, int] = {}
    for a in answers:
        for k, v in a["errors"].items():
            errors[k] = errors.get(k, 0) + v
    if connected != n:
        raise RuntimeError(f"{name}: {connected}/{n} subscribers connected: {errors}")
    return {"subscribers": n, "subscribe_s": round(max(a["seconds"] for a in answers), 3)}


def _publish_and_pause(run: OneService, name: str, quick: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Publish for SECONDS; SLOW subscribers stop reading for PAUSE s from a third of the way in.

    Returns the publisher's figures and what the pause cost on the server."""
    server, clients = run.server, run.clients
    rate, seconds, topics = (
        size("ticker_rate", quick),
        size("ticker_seconds", quick),
        size("ticker_topics", quick),
    )
    slow, pause = list(range(size("ticker_slow", quick))), size("ticker_pause", quick)
    pause = min(pause, seconds * 2 / 3)  # a quick run is shorter than the full pause
    kind = TARGETS[name][3]
    args = [kind, str(rate), str(seconds), str(topics)]
    if kind == "websockets":
        args.append(f"ws://127.0.0.1:{server.port}/ws/ticker/")
    clients.all("mark", [slow] * len(clients.procs))
    proc = start_django(args, env=run.env, module=PUBLISHER)
    try:
        _wait_ready(proc)
        time.sleep(seconds / 3)
        rss0 = proc_rss_kib(server.pid)
        clients.all("pause", [slow] * len(clients.procs))
        time.sleep(pause)
        held = buffered_bytes(server.port) if kind == "service" else None
        rss1 = proc_rss_kib(server.pid)
        clients.all("resume", [None] * len(clients.procs))
    except BaseException:
        proc.kill()
        raise
    publisher = finish_django(proc, args, timeout=seconds * 4 + 120)
    paused = {
        "sockets": len(slow),
        "pause_s": round(pause, 2),
        "live_buffered_bytes": held,
        "rss_growth_kib": rss1 - rss0,
    }
    return publisher, paused


def _slow_figures(res: list[dict[str, Any]], paused: dict[str, Any]) -> dict[str, Any]:
    ages = [a / 1e6 for r in res for a in r["slow_first_age_ns"] if a >= 0]
    fresh = [f / 1e6 for r in res for f in r["slow_fresh_after_ns"] if f >= 0]
    got = [x for r in res for x in r["slow_received"]]
    return {
        **paused,
        "first_age_ms_median": round(statistics.median(ages), 1) if ages else None,
        "first_age_ms_max": round(max(ages), 1) if ages else None,
        "fresh_after_ms_max": round(max(fresh), 1) if len(fresh) == paused["sockets"] else None,
        "caught_up": len(fresh),
        "received_each": got,
    }


def ticker_target(name: str, prep: dict, quick: bool) -> dict[str, Any]:
    server_kind, app, _path, _kind = TARGETS[name]
    n_clients = size("ticker_clients", quick)
    topics = size("ticker_topics", quick)
    factory = "bench.ticker_client:TickerClient"
    with one_service(server_kind, app, n_clients, factory=factory, make_env=ticker_env) as run:
        joined = _subscribe(run, name, prep, quick)
        cpu0 = proc_cpu_seconds(run.server.pid)
        publisher, paused = _publish_and_pause(run, name, quick)
        counts = publishes_per_topic(publisher["published"], topics)
        spec = {"counts": counts, "quiet": 3.0, "timeout": 120}
        res = run.clients.all("collect", [spec] * n_clients, timeout=300)
        cpu = proc_cpu_seconds(run.server.pid) - cpu0
        command = run.server.command()
    received = sum(r["received"] for r in res)
    last = max(r["last_ns"] for r in res)
    span = (last - publisher["t_first"]) / 1e9 if last else 0.0
    out = {
        "server": server_kind,
        "command": command,
        **joined,
        "topics": topics,
        "follow": size("ticker_follow", quick),
        "publisher": publisher,
        "received": received,
        "expected": sum(r["expected"] for r in res),
        "seconds": round(span, 3),
        "deliveries_per_s": round(received / span, 1) if span > 0 else 0.0,
        "worker_cpu_s": round(cpu, 3),
        "worker_cpu_share": round(cpu / span, 3) if span > 0 else None,
        "client_cpu_s": [round(r["client_cpu_s"], 3) for r in res],
        "client_wall_s": [round(r["client_wall_s"], 3) for r in res],
        **lat_stats([r["lat"] for r in res]),
        "slow": _slow_figures(res, paused),
    }
    for key in ("conflated", "duplicates", "out_of_order", "behind", "lost_sockets", "error_frames"):
        out[key] = sum(r[key] for r in res)
    out["error_samples"] = [s for r in res for s in r["error_samples"]][:5]
    # The contract's promise, conflation or not: in order, once, and every socket ends on the latest value.
    out["latest_everywhere"] = not (
        out["behind"] or out["duplicates"] or out["out_of_order"] or out["lost_sockets"]
    )
    if not out["latest_everywhere"]:
        out["server_log_tail"] = run.log
    return out


def ticker(prep: dict, quick: bool) -> dict[str, Any]:
    finish_django(start_django(["declare"], module=PUBLISHER), ["declare"], timeout=120)
    # While working on one target: BENCH_TICKER_TARGETS=service-daphne
    targets = each_target(
        list(TARGETS), "BENCH_TICKER_TARGETS", lambda name: ticker_target(name, prep, quick)
    )
    pairs = [
        ("service_daphne_vs_channels_daphne", "service-daphne", "channels-daphne", 3),
        ("service_daphne_vs_websockets", "service-daphne", "websockets", 3),
    ]
    return {"targets": targets, "ratios": rate_ratios(targets, pairs)}
