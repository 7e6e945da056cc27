"""The `joins` workload (issue 12, item 4): its targets, its storms and its runs.

joins: N distinct users (their own session cookies) join one room at a steady rate,
alternating between two workers, while one member (the poster, who joined first)
posts. Two passes per N, each in a room of its own:

- `joins`: the joins alone, then the poster posts a few messages once the room is
  quiet (the issue's original measurement, at a steady join rate);
- `storm`: the poster posts at a steady rate from the first join to the last.

Per pass: frames and bytes every member received, by kind, in total and per join per
member; the time from the last join's welcome to the last presence frame anywhere
("quiet"); the workers' CPU seconds (sum over both) per join; each post's delivery
latency to each member; deliveries lost, duplicated or unexpected (checked by id
against the database); and whether each member's online list is right at the end.

The service runs under the production launcher, two `python -m realtime.serve`
workers; plain Channels (`bench/baseline_channels.py`, no presence) under two daphne
processes, as the Channels tutorial deploys it. The checks are bench/joins_checks.py, the
figures bench/joins_figures.py, the load generator bench/joins_client.py.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.client import now_ns
from bench.client_procs import Clients
from bench.common import Stack, bench_env, finish_django, proc_cpu_seconds, start_django
from bench.joins_checks import LogWatch, check_online, online_list, room_ids, wait_empty
from bench.joins_figures import Seen, pass_figures
from bench.targets import (
    CHANNELS_APP,
    FANOUT_CONNECT_CONCURRENCY,
    SERVICE_APP,
    drop_prefix,
    headers_for,
    new_prefix,
    profiled,
    start_server,
)
from bench.workloads import Skip, each_target, size
from realtime.launcher import Worker

FACTORY = "bench.joins_client:JoinsClient"
JOINS_TARGETS = {
    # name: (launcher, app, path with the room, client mode)
    "service-serve-x2": ("serve", SERVICE_APP, "/ws/chat/{}/", "chat"),
    "channels-daphne-x2": ("daphne", CHANNELS_APP, "/ws/baseline/{}/", "tutorial"),
}
PASSES = ("joins", "storm")
# A room is quiet once no presence frame arrived for this long (three PRESENCE_FLUSH_MS);
# a later one would still be counted, and would move the figure.
QUIET_S = 1.5
QUIET_LIMIT_S = 60.0
# Deliveries still missing this long after the last post (or with none arriving for
# STALL_S) are counted lost: plain Channels falls behind by minutes at 5,000 members.
DRAIN_S = 180.0
STALL_S = 15.0
# Before the online lists are compared: no frame at all for a second, waited for this long.
SETTLE_S = 60.0
# No join begins later than this many times its scheduled storm length (plus a minute).
STORM_SLACK = 3


def key_env(prefix: str) -> dict[str, str]:
    """A target's environment: every Redis key it makes is under its own prefix."""
    return bench_env(
        CHANNEL_LAYER_PREFIX=prefix,
        PRESENCE_KEY_PREFIX=f"{prefix}-presence",
        CHAT_RATE_KEY_PREFIX=f"{prefix}-rate",
        # The drain on SIGTERM (realtime.serve) is not measured here: stop at once.
        DRAIN_GRACE_SECONDS="0",
    )


def worker_cpu(servers: list[Worker]) -> float:
    return sum(proc_cpu_seconds(s.pid) for s in servers)


def calm(servers: list[Worker], limit: float = 120.0) -> float:
    """Wait (bounded) until the workers are nearly idle: the last storm's work is done.

    Returns the seconds waited. A worker that is still taking the posts of a closed
    socket (frames already read are handled in order) would otherwise be measured with
    the next storm.
    """
    start = time.monotonic()
    before = worker_cpu(servers)
    while time.monotonic() - start < limit:
        time.sleep(0.5)
        now = worker_cpu(servers)
        if now - before < 0.05:
            break
        before = now
    return round(time.monotonic() - start, 1)


def room_slug(tag: str, n: int, label: str) -> str:
    return f"joins_{tag}_{n}_{label}"


class Run:
    """One target: two workers and two load-generator processes, reused by every storm."""

    def __init__(self, name: str, tag: str, prep: dict, quick: bool, stack: Stack, clients: Clients) -> None:
        launcher, app, self.path, self.mode = JOINS_TARGETS[name]
        self.name = name
        self.prep = prep
        self.quick = quick
        self.prefix = new_prefix()
        self.env = key_env(self.prefix)
        self.tag = tag
        self.rate = size("joins_rate", quick)
        self.post_rate = size("joins_post_rate", quick)
        self.after_posts = size("joins_after_posts", quick)
        self.stack = stack
        self.clients = clients
        with ThreadPoolExecutor(2) as pool:  # each start waits for its port: both at once
            self.servers = list(pool.map(lambda _: start_server(stack, launcher, app, self.env), range(2)))
        self.cookie0 = f"{prep['cookie_name']}={prep['cookies'][0]}"
        self.logs = LogWatch(self.servers)

    def storm(self, n: int, label: str, posting: bool) -> dict[str, Any]:
        chat = self.mode == "chat"
        slug = room_slug(self.tag, n, label)
        a = self.servers[0]
        urls = [f"ws://127.0.0.1:{s.port}{self.path.format(slug)}" for s in self.servers]
        tag = f"{self.tag}{label}{n}"
        clients = self.clients
        clients.all("begin", [{"mode": self.mode, "tag": tag, "nbits": n}] * 2)
        poster = clients.procs[0].call(
            "poster", {"index": 0, "url": urls[0], "headers": headers_for(self.prep, a.port, [0])[0]}
        )
        # Join k is user k + 1 on worker k mod 2; each generator process drives one worker's joins.
        joins = [
            [k, k + 1, urls[k % 2], headers_for(self.prep, self.servers[k % 2].port, [k + 1])[0]]
            for k in range(n - 1)
        ]
        specs = [
            {
                "joins": [j for j in joins if j[0] % 2 == p],
                "t0": now_ns() + 300_000_000,
                "rate": self.rate,
                "concurrency": FANOUT_CONNECT_CONCURRENCY,
                "timeout": 30.0,
                "post": {"rate": self.post_rate} if posting and p == 0 else None,
            }
            for p in range(2)
        ]
        specs[1]["t0"] = specs[0]["t0"]
        until = specs[0]["t0"] + int((STORM_SLACK * n / self.rate + 60) * 1e9)
        for spec in specs:
            spec["until"] = until
        cpu0 = worker_cpu(self.servers)
        with contextlib.ExitStack() as spies:
            for i, server in enumerate(self.servers):
                spies.enter_context(profiled(server, f"joins-{self.name}-{n}-{label}-w{i}"))
            # Bounded, with room for a server that takes joins ten times slower than scheduled.
            storm = clients.all("storm", specs, timeout=10 * n / self.rate + 300)
            posted = clients.procs[0].call("stop_posting")
            quiet = clients.all("quiet", [{"quiet": QUIET_S, "limit": QUIET_LIMIT_S}] * 2) if chat else None
            cpu_joined = worker_cpu(self.servers)
            if not posting:
                posted = clients.procs[0].call("burst", {"count": self.after_posts})
            echoes = clients.procs[0].call(
                "echoes", {"timeout": DRAIN_S, "stall": STALL_S}, timeout=DRAIN_S + 60
            )
            if chat:
                check = {"ids": room_ids(a.port, slug, self.cookie0, poster["last_id"] or 0)}
            else:
                check = {"sends": posted["sends"]}
            check.update({"timeout": DRAIN_S, "stall": STALL_S})
            verify = clients.all("verify", [check] * 2, timeout=DRAIN_S + 120)
            cpu_end = worker_cpu(self.servers)
        online = None
        if chat:
            views = clients.all("online", [{"quiet": 1.0, "limit": SETTLE_S}] * 2, timeout=SETTLE_S + 60)
            http = online_list(a.port, slug, self.cookie0)
            online = check_online([m for v in views for m in v["members"]], http)
            # Frames still arriving (a backlog of posts): a list may lag behind, not be wrong.
            online["settled"] = all(v["settled"] for v in views)
        clients.all("hangup", [None] * 2)
        left = wait_empty(a.port, slug, self.cookie0) if chat else None
        settled = calm(self.servers)
        seen = Seen(storm, posted, quiet, echoes, check, verify, online, left, cpu0, cpu_joined, cpu_end)
        out = pass_figures(seen, n, label, posting, self.rate, self.post_rate)
        out["server_log"] = self.logs.take()
        # How long the workers stayed busy after the sockets closed (posts still queued, leaves).
        out["settle_after_close_s"] = settled
        return out


def joins_target(name: str, prep: dict, quick: bool) -> dict[str, Any]:
    mode = JOINS_TARGETS[name][3]
    if mode == "chat" and not prep["chat"]:
        raise Skip("chat endpoint /ws/chat/<slug>/ is not in config.routing")
    sizes = size("joins_sizes", quick)
    warm = min(10, *sizes)
    tag = uuid.uuid4().hex[:8]
    labels = [(n, p) for n in sizes for p in PASSES] + ([] if quick else [(warm, "warm")])
    rooms = ["room", *(room_slug(tag, n, p) for n, p in labels)]
    # The rooms are made while the workers start.
    making = start_django(rooms, env=bench_env()) if mode == "chat" else None
    with Stack() as stack, Clients(2, factory=FACTORY) as clients:
        run = Run(name, tag, prep, quick, stack, clients)
        try:
            if making is not None:
                finish_django(making, rooms, timeout=120)
            if not quick:
                # Imports, pools and first queries happen here, not in the first measured storm.
                run.storm(warm, "warm", posting=True)
            per_size: dict[str, dict[str, Any]] = {}
            failed = None
            for n in sizes:
                per_size[str(n)] = {}
                for p in PASSES:
                    try:
                        per_size[str(n)][p] = run.storm(n, p, posting=p == "storm")
                    except Exception as exc:
                        # The generators and workers are in an unknown state: stop here,
                        # keeping the sizes measured so far.
                        failed = f"{n} members, {p}: {type(exc).__name__}: {exc}"
                        break
                if failed:
                    break
            commands = [s.command() for s in run.servers]
        finally:
            drop_prefix(run.prefix)
    complete = {n: passes for n, passes in per_size.items() if len(passes) == len(PASSES)}
    return {
        "sizes": complete,
        **({"stopped": failed} if failed else {}),
        "command": "  +  ".join(commands),
        "join_rate": run.rate,
        "post_rate": run.post_rate,
        "posts_after_joins": run.after_posts,
    }


def summary(targets: dict[str, Any]) -> dict[str, Any]:
    """The issue's ratios, on the service's figures."""
    out: dict[str, Any] = {}
    for name, t in targets.items():
        sizes = t.get("sizes")
        if not sizes:
            continue
        ns = sorted(int(n) for n in sizes)
        if len(ns) < 2:
            continue
        small, large = str(ns[0]), str(ns[-1])
        ratio = {}
        for p in PASSES:
            a, b = sizes[small][p]["cpu_per_join_ms"], sizes[large][p]["cpu_per_join_ms"]
            ratio[f"cpu_per_join_{p}_{large}_vs_{small}"] = round(b / a, 2) if a else None
        if "1000" in sizes and "2000" in sizes:
            for p in PASSES:
                a, b = sizes["1000"][p]["join_bytes"], sizes["2000"][p]["join_bytes"]
                ratio[f"join_bytes_{p}_2000_vs_1000"] = round(b / a, 2) if a else None
        out[name] = ratio
    return out


def joins(prep: dict, quick: bool) -> dict[str, Any]:
    # While working on one target: BENCH_JOINS_TARGETS=service-serve-x2
    targets = each_target(
        list(JOINS_TARGETS), "BENCH_JOINS_TARGETS", lambda name: joins_target(name, prep, quick)
    )
    return {"targets": targets, "ratios": summary(targets)}
