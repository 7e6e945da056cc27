"""The `joins` workload (issue 12, item 4) and the fan-out run that does not wait for quiet.

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
processes, as the Channels tutorial deploys it.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.parse
import urllib.request
import uuid
from array import array
from bisect import bisect_right
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench import workloads as w
from bench.client import now_ns
from bench.client_procs import Clients
from bench.common import Stack, bench_env, finish_django, proc_cpu_seconds, start_django
from bench.joins_member import user_index
from bench.stats import spread_ms
from realtime.launcher import Worker

FACTORY = "bench.joins_client:JoinsClient"
JOINS_TARGETS = {
    # name: (launcher, app, path with the room, client mode)
    "service-serve-x2": ("serve", w.SERVICE_APP, "/ws/chat/{}/", "chat"),
    "channels-daphne-x2": ("daphne", w.CHANNELS_APP, "/ws/baseline/{}/", "tutorial"),
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
# After the sockets close, everyone must be offline within this long: more than
# PRESENCE_TTL_SECONDS (60), so an entry still there is being kept alive, not expiring.
EMPTY_S = 90.0
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


def get_json(port: int, path: str, query: dict[str, str], cookie: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - loopback
        return json.loads(answer.read())


def online_list(port: int, slug: str, cookie: str) -> tuple[list[str], int]:
    """The room's whole online list over HTTP, a page at a time, as the room page reads it."""
    names: list[str] = []
    query = {"limit": "1000"}
    count = 0
    for _ in range(100):  # 100,000 names at most: bounded
        page = get_json(port, f"/api/chat/rooms/{slug}/online/", query, cookie)
        names += page["results"]
        count = page["online_count"]
        if page["next_after"] is None:
            break
        query["after"] = page["next_after"]
    return names, count


def room_ids(port: int, slug: str, cookie: str, floor: int) -> list[int]:
    """The ids of the room's messages above `floor`, from its history over HTTP (what is stored)."""
    ids: list[int] = []
    query = {"limit": "100"}
    for _ in range(1000):  # 100,000 messages at most: bounded
        page = get_json(port, f"/api/chat/rooms/{slug}/messages/", query, cookie)
        ids += [m["id"] for m in page["results"] if m["id"] > floor]
        if page["next_before"] is None or any(m["id"] <= floor for m in page["results"]):
            break
        query["before"] = str(page["next_before"])
    return sorted(ids)


def wait_empty(port: int, slug: str, cookie: str, limit: float = EMPTY_S) -> int:
    """Poll (bounded) until nobody is online in the room; returns who still is."""
    deadline = time.monotonic() + limit
    count = -1
    while time.monotonic() < deadline:
        count = online_list(port, slug, cookie)[1]
        if count == 0:
            break
        time.sleep(0.25)
    return count


def check_online(members: list[dict[str, Any]], http: tuple[list[str], int] | None) -> dict[str, Any]:
    """Each member's online list (welcome + diffs) against the truth: the members still connected.

    A member must know every user whose handshake began after its own welcome (their
    joins come after its own, so it is told of each), and nobody who is not online;
    one whose welcome named everyone and who never got a truncated frame must know
    exactly the truth. Every member's count must be the truth's.
    """
    truth = 0
    for m in members:
        if not m["dead"]:
            truth |= 1 << m["index"]
    n_truth = truth.bit_count()
    # Who began joining after a given moment: suffix unions over the start times.
    order = sorted(members, key=lambda m: m["t_start"])
    starts = [m["t_start"] for m in order]
    suffix = [0] * (len(order) + 1)
    for i in range(len(order) - 1, -1, -1):
        suffix[i] = suffix[i + 1] | (1 << order[i]["index"])
    out = dict.fromkeys(
        (
            "members_wrong",
            "count_wrong",
            "names_missing",
            "names_not_online",
            "members_missing_names",
            "complete_members",
            "complete_wrong",
            "truncated_frames",
        ),
        0,
    )
    for m in members:
        out["truncated_frames"] += m["truncated"]
        if m["dead"]:
            continue
        known = int.from_bytes(m["known"], "little")
        wrong = m["count"] != n_truth
        out["count_wrong"] += 1 if wrong else 0
        stray = (known & ~truth).bit_count()
        out["names_not_online"] += stray
        wrong = wrong or stray > 0
        if not m["truncated"]:
            later = suffix[bisect_right(starts, m["t_welcome"])] & truth
            missing = (later & ~known).bit_count()
            out["names_missing"] += missing
            out["members_missing_names"] += 1 if missing else 0
            wrong = wrong or missing > 0
            if m["welcome_complete"]:
                out["complete_members"] += 1
                out["complete_wrong"] += 1 if known != truth else 0
                wrong = wrong or known != truth
        out["members_wrong"] += 1 if wrong else 0
    out["truth"] = n_truth
    if http is not None:
        names, count = http
        listed = 0
        for name in names:
            i = user_index(name)
            if i >= 0:
                listed |= 1 << i
        out["http_count"] = count
        out["http_names"] = len(names)
        out["http_matches"] = listed == truth and count == n_truth and len(names) == n_truth
    out["ok"] = (
        out["count_wrong"] == 0
        and out["names_missing"] == 0
        and out["names_not_online"] == 0
        and out["complete_wrong"] == 0
        and out.get("http_matches", True)
    )
    return out


# Worker log lines that say a user saw something go wrong (realtime.serve and daphne).
LOG_EVENTS = {
    "unexpected_errors": "unexpected error endpoint=",
    "application_errors": "Exception inside application",
    "instances_killed": "took too long to shut down and was killed",
    "slow_clients_dropped": "event=slow_client_dropped",
}


class LogWatch:
    """Counts LOG_EVENTS in the workers' logs since the last call."""

    def __init__(self, servers: list[Worker]) -> None:
        self.servers = servers
        self.offsets = [0] * len(servers)

    def take(self) -> dict[str, int]:
        counts = dict.fromkeys(LOG_EVENTS, 0)
        for i, server in enumerate(self.servers):
            with contextlib.suppress(OSError), server.log_path.open("rb") as log:
                log.seek(self.offsets[i])
                text = log.read().decode(errors="replace")
                self.offsets[i] = log.tell()
            for key, needle in LOG_EVENTS.items():
                counts[key] += text.count(needle)
        return counts


def poster_figures(posted: dict[str, Any], echoes: dict[str, Any], ids: list[int] | None) -> dict[str, Any]:
    """How the poster's own posts fared: stored, and how fast the server took them.

    A post the server never stored reaches nobody, which no member's check can see:
    it is counted here (the service: ids in the history; the baseline stores nothing).
    The poster gets each post back once it is stored and published; if the server takes
    posts slower than they are sent, the lag grows from the first post to the last.
    """
    at, lag = array("q"), array("q")
    at.frombytes(echoes["echo_ns"])
    lag.frombytes(echoes["echo_lat"])
    span = (at[-1] - posted["t_first_send"]) / 1e9 if at else 0.0
    return {
        "echoed": echoes["echoed"],
        "posts_not_stored": posted["sent"] - len(ids) if ids is not None else 0,
        "posts_taken_per_s": round(len(at) / span, 1) if span > 0 else None,
        "first_post_echo_ms": round(lag[0] / 1e6, 1) if lag else None,
        "last_post_echo_ms": round(lag[-1] / 1e6, 1) if lag else None,
    }


def _sum_kinds(answers: list[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for a in answers:
        for kind, v in a[key].items():
            out[kind] = out.get(kind, 0) + v
    return out


@dataclass
class Seen:
    """What one storm's steps answered, for `Run.figures`."""

    storm: list[dict[str, Any]]
    posted: dict[str, Any]
    quiet: list[dict[str, Any]] | None
    echoes: dict[str, Any]
    check: dict[str, Any]
    verify: list[dict[str, Any]]
    online: dict[str, Any] | None
    left: int | None
    cpu0: float
    cpu_joined: float
    cpu_end: float


def room_slug(tag: str, n: int, label: str) -> str:
    return f"joins_{tag}_{n}_{label}"


class Run:
    """One target: two workers and two load-generator processes, reused by every storm."""

    def __init__(self, name: str, tag: str, prep: dict, quick: bool, stack: Stack, clients: Clients) -> None:
        launcher, app, self.path, self.mode = JOINS_TARGETS[name]
        self.name = name
        self.prep = prep
        self.quick = quick
        self.prefix = w.new_prefix()
        self.env = key_env(self.prefix)
        self.tag = tag
        self.rate = w.size("joins_rate", quick)
        self.post_rate = w.size("joins_post_rate", quick)
        self.after_posts = w.size("joins_after_posts", quick)
        self.stack = stack
        self.clients = clients
        with ThreadPoolExecutor(2) as pool:  # each start waits for its port: both at once
            self.servers = list(pool.map(lambda _: w._start(stack, launcher, app, self.env), range(2)))
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
            "poster", {"index": 0, "url": urls[0], "headers": w.headers_for(self.prep, a.port, [0])[0]}
        )
        # Join k is user k + 1 on worker k mod 2; each generator process drives one worker's joins.
        joins = [
            [k, k + 1, urls[k % 2], w.headers_for(self.prep, self.servers[k % 2].port, [k + 1])[0]]
            for k in range(n - 1)
        ]
        specs = [
            {
                "joins": [j for j in joins if j[0] % 2 == p],
                "t0": now_ns() + 300_000_000,
                "rate": self.rate,
                "concurrency": w.FANOUT_CONNECT_CONCURRENCY,
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
                spies.enter_context(w.profiled(server, f"joins-{self.name}-{n}-{label}-w{i}"))
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
        out = self.figures(n, label, posting, seen)
        out["server_log"] = self.logs.take()
        # How long the workers stayed busy after the sockets closed (posts still queued, leaves).
        out["settle_after_close_s"] = settled
        return out

    def figures(self, n: int, label: str, posting: bool, seen: Seen) -> dict[str, Any]:
        storm, posted, echoes, check, verify = seen.storm, seen.posted, seen.echoes, seen.check, seen.verify
        quiet, online, left = seen.quiet, seen.online, seen.left
        cpu0, cpu_joined, cpu_end = seen.cpu0, seen.cpu_joined, seen.cpu_end
        joins = n - 1
        joined = sum(s["joined"] for s in storm)
        errors: dict[str, int] = {}
        for s in storm:
            for k, v in s["errors"].items():
                errors[k] = errors.get(k, 0) + v
        t_start = min(s["t_start"] for s in storm)
        t_last = max(s["t_last_welcome"] for s in storm)
        frames = _sum_kinds(verify, "frames")
        size = _sum_kinds(verify, "bytes")
        # Members told of each join: the poster and every earlier joiner.
        member_joins = joins * (joins + 1) // 2
        totals = {
            k: sum(v[k] for v in verify)
            for k in ("expected", "received", "lost", "duplicates", "unexpected", "out_of_order", "dropped")
        }
        out: dict[str, Any] = {
            "members": n,
            "pass": label,
            "joins": joins,
            "joined": joined,
            "join_errors": errors,
            "joins_not_attempted": sum(s["not_attempted"] for s in storm),
            "join_rate_set": self.rate,
            "join_rate_achieved": round(joins / ((t_last - t_start) / 1e9), 1) if t_last > t_start else None,
            "join_lag": spread_ms([s["lags"] for s in storm]),
            "handshake": spread_ms([s["handshakes"] for s in storm]),
            "storm_s": round((t_last - t_start) / 1e9, 2),
            "post_rate": self.post_rate if posting else None,
            "posts": posted["sent"],
            **poster_figures(posted, echoes, check.get("ids")),
            "frames": frames,
            "bytes": size,
            "join_bytes": size["welcome"] + size["presence"],
            "member_joins": member_joins,
            "presence_frames_per_join_per_member": round(frames["presence"] / member_joins, 4)
            if member_joins
            else None,
            "presence_bytes_per_join_per_member": round(size["presence"] / member_joins, 2)
            if member_joins
            else None,
            "join_bytes_per_join": round((size["welcome"] + size["presence"]) / joins, 1) if joins else None,
            "worker_cpu_s": round(cpu_end - cpu0, 3),
            "worker_cpu_joining_s": round(cpu_joined - cpu0, 3),
            # The joins pass: the window ends at quiet, before its few posts.
            "cpu_per_join_ms": round(((cpu_end if posting else cpu_joined) - cpu0) / joins * 1000, 3)
            if joins
            else None,
            "latency": spread_ms([v["lat"] for v in verify]),
            **totals,
            "short_members": sum(v["short_members"] for v in verify),
            "early": sum(v["early"] for v in verify),
            # Deliveries of posts stored after the history was read (the server fell behind).
            "late": sum(v["late"] for v in verify),
            "timed_out": any(v["timed_out"] for v in verify),
            "stalled": any(v["stalled"] for v in verify),
            "samples": [s for v in verify for s in v["samples"]][:5],
            "client_cpu_s": [v["client_cpu_s"] for v in verify],
        }
        out["all_delivered"] = _all_delivered(totals, posted["sent"] > 0, out)
        if quiet is not None:
            last_presence = max(v["last_presence_ns"] for v in verify)
            out["quiet_s"] = round((last_presence - t_last) / 1e9, 3) if last_presence else None
            out["foreign_names"] = sum(v["foreign_names"] for v in verify)
        if online is not None:
            out["online"] = online
            out["online_after_close"] = left
        return out


def joins_target(name: str, prep: dict, quick: bool) -> dict[str, Any]:
    mode = JOINS_TARGETS[name][3]
    if mode == "chat" and not prep["chat"]:
        raise w.Skip("chat endpoint /ws/chat/<slug>/ is not in config.routing")
    sizes = w.size("joins_sizes", quick)
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
            w.drop_prefix(run.prefix)
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
    targets = w.each_target(
        list(JOINS_TARGETS), "BENCH_JOINS_TARGETS", lambda name: joins_target(name, prep, quick)
    )
    return {"targets": targets, "ratios": summary(targets)}


# --- the fan-out without quiet ---------------------------------------------------------------
OVERLAP_TARGETS = {
    # name: (server, app, path, client mode)
    "service-daphne-overlap": ("daphne", w.SERVICE_APP, "/ws/chat/lobby/", "chat"),
    "service-uvicorn-overlap": ("uvicorn", w.SERVICE_APP, "/ws/chat/lobby/", "chat"),
    "channels-daphne-overlap": ("daphne", w.CHANNELS_APP, "/ws/baseline/lobby/", "tutorial"),
    "channels-uvicorn-overlap": ("uvicorn", w.CHANNELS_APP, "/ws/baseline/lobby/", "tutorial"),
}


def _overlap_check(
    mode: str, prep: dict, server: Worker, poster: dict[str, Any], posted: dict[str, Any]
) -> dict[str, Any]:
    """What the members' deliveries are checked against: the room's stored ids (chat), else the sends."""
    if mode == "chat":
        cookie = f"{prep['cookie_name']}={prep['cookies'][0]}"
        check = {"ids": room_ids(server.port, "lobby", cookie, poster["last_id"] or 0)}
    else:
        check = {"sends": posted["sends"]}
    check.update({"timeout": 300, "stall": STALL_S})
    return check


# What the overlap's figures take as they are from the client's verify answer, in this order.
OVERLAP_COUNTS = (
    *("expected", "received", "lost", "duplicates", "unexpected", "out_of_order", "dropped"),
    *("short_members", "early", "timed_out", "stalled", "samples", "frames", "bytes"),
)


def _all_delivered(res: dict[str, Any], sent: bool, out: dict[str, Any]) -> bool:
    """The posts were sent (`sent`) and stored, and every member got each once and nothing else."""
    return (
        res["lost"] == 0
        and res["duplicates"] == 0
        and res["unexpected"] == 0
        and res["received"] == res["expected"]
        and sent
        and not out["posts_not_stored"]
    )


def overlap_target(name: str, prep: dict, quick: bool) -> dict[str, Any]:
    """The fan-out, but the poster's burst goes out once half the room is in, the rest still joining.

    No settle and no heal: what a member loses while the room fills is lost.
    """
    server_kind, app, path, mode = OVERLAP_TARGETS[name]
    if mode == "chat" and not prep["chat"]:
        raise w.Skip("chat endpoint /ws/chat/<slug>/ is not in config.routing")
    n = w.size("fanout_sockets", quick)
    m = w.size("fanout_messages", quick)
    with w.one_service(server_kind, app, factory=FACTORY, make_env=key_env) as run:
        server, clients, tag = run.server, run.clients, run.tag
        url = f"ws://127.0.0.1:{server.port}{path}"
        proc = clients.procs[0]
        proc.call("begin", {"mode": mode, "tag": tag, "nbits": n})
        poster = proc.call(
            "poster", {"index": 0, "url": url, "headers": w.headers_for(prep, server.port, [0])[0]}
        )
        joins = [[k, k + 1, url, h] for k, h in enumerate(w.headers_for(prep, server.port, range(1, n)))]
        after = (n - 1) // 2
        cpu0 = proc_cpu_seconds(server.pid)
        with w.profiled(server, name):
            storm = proc.call(
                "storm",
                {
                    "joins": joins,
                    "t0": now_ns(),
                    "rate": None,
                    "concurrency": w.FANOUT_CONNECT_CONCURRENCY,
                    "timeout": 60.0,
                    "post": {"count": m, "after": after},
                },
                timeout=400,
            )
            posted = proc.call("stop_posting")
            echoes = proc.call("echoes", {"timeout": DRAIN_S, "stall": STALL_S}, timeout=DRAIN_S + 60)
            check = _overlap_check(mode, prep, server, poster, posted)
            res = proc.call("verify", check, timeout=420)
        cpu1 = proc_cpu_seconds(server.pid)
        sends = array("q")
        sends.frombytes(posted["sends"])
        welcomes = array("q")
        welcomes.frombytes(storm["welcomes"])
    span = (res["last_message_ns"] - posted["t_first_send"]) / 1e9
    lat = spread_ms([res.pop("lat")])
    out = {
        "server": server_kind,
        "command": server.command(),
        "sockets": n,
        "messages": m,
        "posts": posted["sent"],
        **poster_figures(posted, echoes, check.get("ids")),
        "joined": storm["joined"] + 1,
        "join_errors": storm["errors"],
        # Sockets whose welcome came after the first post: they joined while it fanned out.
        "joined_while_posting": sum(1 for t in welcomes if t > posted["t_first_send"]),
        "seconds": round(span, 4),
        "deliveries_per_s": round(res["received"] / span, 1) if span > 0 else 0.0,
        "latency_p50_ms": lat["p50_ms"],
        "latency_p99_ms": lat["p99_ms"],
        "latency_max_ms": lat["max_ms"],
        "server_cpu_s": round(cpu1 - cpu0, 3),
        **{k: res[k] for k in OVERLAP_COUNTS},
        "client_cpu_s": [res["client_cpu_s"]],
    }
    out["all_delivered"] = _all_delivered(res, posted["sent"] == m, out)
    if not out["all_delivered"]:
        out["server_log_tail"] = run.log
    return out
