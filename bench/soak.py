"""`python -m bench.soak --sockets N --minutes M`: the soak of issue 7 (`make soak SOAK_ARGS=...`).

Not part of CI. It starts two workers with the production launcher
(`python -m realtime.serve`, as docker-compose runs them) on free loopback
ports, sharing the Redis of REDIS_URL (a random CHANNEL_LAYER_PREFIX, and
presence and rate-limit key prefixes under it) and the PostgreSQL database of
DATABASE_URL (defaults as for `make bench`: database `bench`, created when
missing, and Redis db 5). Then:

- N/2 bench users, each with two sockets, as a browser on a room page has:
  one in a chat room (`soak-00`.. `--rooms`, members spread evenly over the
  rooms) and one on its inbox. A user's chat socket is on worker (i mod 2),
  its inbox socket on worker (i div 2 mod 2): every room has members on both
  workers, and half of the users have their two sockets on different workers.
  The load-generator processes (`bench/soak_client.py`) behave like the
  browser client (resume, ping, backoff, outbox).
- For M minutes: members post in their rooms (`--chat-rate` per room per
  second, each post preceded by `typing`), the `notify()` driver sends to one
  random user at `--notify-rate` per second and to `--group-size` users every
  `--group-every` seconds, and `--churn` % of the sockets per minute drop
  (half with a close frame, half without: a closed tab, a lost network) and
  come back 0.2-3 s later, on either worker, with `resume`.
- Every `--sample-every` seconds: each worker's RSS, open file descriptors,
  threads, CPU and open sockets (its /metrics), the Redis keys under the run's
  prefixes and the pub/sub channels, Redis used_memory (server-wide), the
  database's connections, the clients' state and the delivery latency.
- At the end the load stops, every client comes back and empties its outbox,
  and every client's ids (all its connections) are compared with the
  database: gaps, duplicates within a connection, ids that are not in the
  database, and posts stored against posts acknowledged. Then the sockets
  close and one more sample shows what the workers keep afterwards.

It prints a table, saves bench/results/soak.json and rewrites the generated
part of docs/reliability.md ("Soak"), unless --no-save. `--docs` only
rewrites the docs from the saved json. Exit status 1 when the check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import re
import signal
import sys
import time
import traceback
import urllib.parse
import urllib.request
import uuid
from array import array
from pathlib import Path
from typing import Any

from bench.client_procs import Clients
from bench.common import (
    RECORDED_ENV,
    RESULTS,
    ROOT,
    Stack,
    bench_env,
    finish_django,
    proc_cpu_seconds,
    proc_rss_kib,
    raise_nofile,
    redis_client,
    run_django,
    start_django,
    versions,
)
from bench.stats import lat_stats
from bench.workloads import chunks, drop_prefix, headers_for
from realtime.launcher import Worker

RESULT = RESULTS / "soak.json"
DOC = ROOT / "docs" / "reliability.md"
DOC_BEGIN = "<!-- soak:generated:begin (python -m bench.soak writes this part) -->"
DOC_END = "<!-- soak:generated:end -->"
FULL_SCALE = (2000, 10.0)  # the run: sockets, minutes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--sockets", type=int, default=2000, help="sockets in all (two per user); default 2000")
    p.add_argument("--minutes", type=float, default=10.0, help="length of the load; default 10")
    p.add_argument("--rooms", type=int, default=20, help="chat rooms; default 20")
    p.add_argument("--chat-rate", type=float, default=0.5, help="posts per second per room; default 0.5")
    p.add_argument(
        "--notify-rate", type=float, default=5.0, help="notify() to one user per second; default 5"
    )
    p.add_argument("--group-every", type=float, default=30.0, help="seconds between group notifications")
    p.add_argument("--group-size", type=int, default=100, help="users per group notification; default 100")
    p.add_argument("--churn", type=float, default=3.0, help="%% of sockets dropped per minute; default 3")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples; default 10")
    p.add_argument("--client-processes", type=int, default=2, help="load-generator processes; default 2")
    p.add_argument("--connect-concurrency", type=int, default=25, help="handshakes in flight per process")
    p.add_argument("--no-save", action="store_true", help="print only: no json, no docs")
    p.add_argument("--docs", action="store_true", help="only rewrite docs/reliability.md from soak.json")
    args = p.parse_args(argv)
    if not args.docs:
        if args.sockets < 4 or args.minutes <= 0:
            p.error("--sockets must be at least 4 and --minutes positive")
        if args.sockets // 2 < args.rooms:
            p.error("need at least one user per room: --sockets >= 2 * --rooms")
    return args


# --- the plan --------------------------------------------------------------------------------
def plan(prep: dict, rooms: list[str], servers: list[Worker], users: int) -> list[dict[str, Any]]:
    """Two agents per user: a chat socket in its room and an inbox socket (see the module doc)."""
    agents = []
    for i in range(users):
        pair = i // 2
        chat_worker, inbox_worker = i % 2, pair % 2
        headers = headers_for(prep, servers[chat_worker].port, [i])[0]
        room = rooms[pair % len(rooms)]
        agents.append(
            {
                "key": f"chat:{room}:{i}",
                "kind": "chat",
                "scope": room,
                "urls": [f"ws://127.0.0.1:{s.port}/ws/chat/{room}/" for s in servers],
                "worker": chat_worker,
                "headers": headers,
            }
        )
        agents.append(
            {
                "key": f"inbox:{i}",
                "kind": "notif",
                "scope": prep["user_ids"][i],
                "urls": [f"ws://127.0.0.1:{s.port}/ws/notifications/" for s in servers],
                "worker": inbox_worker,
                "headers": headers,
            }
        )
    return agents


# --- sampling --------------------------------------------------------------------------------
def http_text(url: str, timeout: float = 3.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return response.read().decode()
    except OSError:
        return None


OPEN_RE = re.compile(r'^relay_websocket_open\{endpoint="(\w+)"\} ([0-9.e+]+)$', re.M)


def open_sockets(port: int) -> dict[str, int] | None:
    text = http_text(f"http://127.0.0.1:{port}/metrics")
    if text is None:
        return None
    return {endpoint: int(float(n)) for endpoint, n in OPEN_RE.findall(text)}


def tcp_ports(pid: int) -> dict[int, tuple[int, int, str]]:
    """Socket inode -> (local port, remote port, state) from the process's network namespace."""
    table = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
                table[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), state)
    return table


def fd_kinds(pid: int, port: int, redis_port: int, pg_port: int) -> dict[str, int]:
    """A worker's descriptors by what they are: client sockets, Redis, PostgreSQL, other."""
    kinds = {"clients": 0, "redis": 0, "postgres": 0, "other": 0}
    table = None
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if not link.startswith("socket:["):
            kinds["other"] += 1
            continue
        table = table if table is not None else tcp_ports(pid)
        local, remote, state = table.get(int(link[8:-1]), (0, 0, ""))
        if local == port and state != "0A":  # 0A: the listening socket
            kinds["clients"] += 1
        elif remote == redis_port:
            kinds["redis"] += 1
        elif remote == pg_port:
            kinds["postgres"] += 1
        else:
            kinds["other"] += 1
    return kinds


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Sampler:
    def __init__(self, servers: list[Worker], prefixes: dict[str, str], env: dict[str, str]) -> None:
        self.servers = servers
        self.redis_port = urllib.parse.urlsplit(env["REDIS_URL"]).port or 6379
        self.pg_port = urllib.parse.urlsplit(env["DATABASE_URL"]).port or 5432
        database_url = env["DATABASE_URL"]
        self.prefixes = prefixes  # name -> key prefix; the layer's is a prefix of the others
        self.database_url = database_url
        self.redis = redis_client()
        self.t0 = time.monotonic()
        self.last: dict[int, tuple[float, float]] = {}  # pid -> (wall, cpu seconds)
        self.samples: list[dict[str, Any]] = []
        self.latencies = array("q")

    def redis_keys(self) -> dict[str, int]:
        counts = dict.fromkeys(self.prefixes, 0)
        # Longest prefix first: presence and rate-limit keys also start with the layer's prefix.
        ordered = sorted(self.prefixes.items(), key=lambda kv: -len(kv[1]))
        for key in self.redis.scan_iter(match=self.prefixes["layer"] + "*", count=1000):
            name = key.decode(errors="replace")
            counts[next(n for n, p in ordered if name.startswith(p))] += 1
        return counts

    def channel_kinds(self, names: list[bytes]) -> dict[str, int]:
        """Pub/sub channels by shape (ids and random parts folded): which kind would be leaking."""
        out: dict[str, int] = {}
        skip = len(self.prefixes["layer"])
        for name in names:
            text = name.decode(errors="replace")[skip:]
            kind = re.sub(r"[0-9a-f]{8,}", "X", text)
            kind = re.sub(r"[0-9]+", "N", kind)
            out[kind] = out.get(kind, 0) + 1
        return out

    def client_kills(self) -> int:
        stats = self.redis.info("commandstats")
        return int(stats.get("cmdstat_client|kill", {}).get("calls", 0))

    def pg_connections(self) -> int | None:
        import psycopg

        name = self.database_url.rsplit("/", 1)[1].split("?", 1)[0]
        try:
            with psycopg.connect(self.database_url, connect_timeout=5) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    [name],
                ).fetchone()
                return int(row[0])
        except psycopg.Error:
            return None

    def worker(self, server: Worker) -> dict[str, Any]:
        pid = server.pid
        wall, cpu = time.monotonic(), proc_cpu_seconds(pid)
        before = self.last.get(pid)
        self.last[pid] = (wall, cpu)
        return {
            "port": server.port,
            "rss_kib": proc_rss_kib(pid),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "fd_kinds": fd_kinds(pid, server.port, self.redis_port, self.pg_port),
            "threads": proc_status(pid, "Threads"),
            "cpu_pct": round(100 * (cpu - before[1]) / (wall - before[0]), 1) if before else None,
            "open": open_sockets(server.port),
        }

    def take(self, phase: str, clients: Clients | None) -> dict[str, Any]:
        sample: dict[str, Any] = {"t_s": round(time.monotonic() - self.t0, 1), "phase": phase}
        sample["workers"] = [self.worker(s) for s in self.servers]
        keys = self.redis_keys()
        pubsub = self.redis.pubsub_channels(self.prefixes["layer"] + "*")
        info = self.redis.info("memory")
        sample["redis"] = {
            "keys": keys,
            "pubsub_channels": len(pubsub),
            "pubsub_kinds": self.channel_kinds(pubsub),
            "used_memory_kib": int(info["used_memory"]) // 1024,
            # Someone's CLIENT KILL (a test, an operator) cuts the workers' pub/sub
            # connections; counted so that a latency spike can be told apart.
            "client_kill_calls": self.client_kills(),
        }
        sample["pg_connections"] = self.pg_connections()
        if clients is not None:
            stats = clients.all("stats", [None] * len(clients.procs), timeout=60)
            window = array("q")
            for s in stats:
                window.frombytes(s.pop("lat"))
            self.latencies.extend(window)
            merged = {
                k: sum(s[k] for s in stats)
                for k in (
                    "agents",
                    "live",
                    "connected",
                    "reconnecting",
                    "delivered",
                    "posts_sent",
                    "posts_acked",
                    "churned",
                    "resumes",
                )
            }
            merged["rss_peak_kib"] = [s["rss_peak_kib"] for s in stats]
            closes: dict[str, int] = {}
            for s in stats:
                for code, n in s["server_closes"].items():
                    closes[str(code)] = closes.get(str(code), 0) + n
            merged["server_closes"] = closes
            sample["clients"] = merged
            sample["latency"] = {k: round(v, 1) for k, v in lat_stats([window.tobytes()]).items()}
            sample["latency"]["n"] = len(window)
        self.samples.append(sample)
        print(row_text(sample), flush=True)
        return sample


def settle_after_close(servers: list[Worker], sampler: Sampler, limit: float = 60.0) -> float:
    """Bounded wait after the clients closed: until the workers count no open socket, then
    until the run's pub/sub channel count has not changed for 3 s (channels_redis
    unsubscribes one channel at a time per shard, so after a mass close the count
    falls for seconds). What is left then is what the workers keep. Returns seconds."""
    t0 = time.monotonic()
    deadline = t0 + limit
    while time.monotonic() < deadline and any(
        sum((open_sockets(s.port) or {"?": 1}).values()) for s in servers
    ):
        time.sleep(0.5)  # polling the workers' own count
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(sampler.redis.pubsub_channels(sampler.prefixes["layer"] + "*"))
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= 3.0:
            break
        time.sleep(0.5)  # polling Redis' own count
    return time.monotonic() - t0


# --- the table -------------------------------------------------------------------------------
COLUMNS = (
    "t s",
    "phase",
    "RSS MiB w1/w2",
    "fds w1/w2",
    "CPU % w1/w2",
    "open w1/w2",
    "Redis keys l/p/r",
    "pubsub",
    "Redis MiB",
    "PG",
    "clients live",
    "delivered (sum)",
    "p99 ms",
)


def row_cells(sample: dict[str, Any]) -> list[str]:
    ws = sample["workers"]
    keys = sample["redis"]["keys"]
    clients = sample.get("clients") or {}
    lat = sample.get("latency") or {}

    def pair(f) -> str:
        return "/".join(f(w) for w in ws)

    return [
        f"{sample['t_s']:.0f}",
        sample["phase"],
        pair(lambda w: f"{w['rss_kib'] / 1024:.0f}"),
        pair(lambda w: str(w["fds"])),
        pair(lambda w: "-" if w["cpu_pct"] is None else f"{w['cpu_pct']:.0f}"),
        pair(lambda w: "?" if w["open"] is None else str(sum(w["open"].values()))),
        f"{keys['layer']}/{keys['presence']}/{keys['rate']}",
        str(sample["redis"]["pubsub_channels"]),
        f"{sample['redis']['used_memory_kib'] / 1024:.1f}",
        str(sample["pg_connections"]),
        f"{clients['live']}/{clients['agents']}" if clients else "-",
        f"{clients['delivered']:,}" if clients else "-",
        f"{lat['latency_p99_ms']:,.0f}" if lat.get("n") else "-",
    ]


def row_text(sample: dict[str, Any]) -> str:
    return "  ".join(row_cells(sample))


def markdown_table(samples: list[dict[str, Any]], rows: int = 12) -> str:
    """About `rows` samples of the load phase, evenly spaced, and every sample of the other phases."""
    load = [s["t_s"] for s in samples if s["phase"] == "load"]
    every = (load[-1] - load[0]) / rows if len(load) > 1 else 0.0
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    last = None
    for i, sample in enumerate(samples):
        keep = sample["phase"] != "load" or last is None or sample["t_s"] - last >= every - 0.5
        if sample["phase"] == "load" and i + 1 < len(samples) and samples[i + 1]["phase"] != "load":
            keep = True  # the last sample under load
        if keep:
            if sample["phase"] == "load":
                last = sample["t_s"]
            lines.append("| " + " | ".join(row_cells(sample)) + " |")
    return "\n".join(lines)


# --- the run ---------------------------------------------------------------------------------
def worker_log_summary(server: Worker) -> dict[str, Any]:
    text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    kinds: dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) (\S+) (.{0,120})", line)
        if match:
            key = f"{match[1]} {match[2]} {re.sub(r'[0-9]+', 'N', match[3])}"
            kinds[key] = kinds.get(key, 0) + 1
    return {
        "log": str(server.log_path),
        "warnings": sum(n for k, n in kinds.items() if k.startswith("WARNING")),
        "errors": sum(n for k, n in kinds.items() if not k.startswith("WARNING")),
        "tracebacks": text.count("Traceback (most recent call last)"),
        "top": dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:8]),
    }


def merge_check(parts: list[dict[str, Any]]) -> dict[str, Any]:
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


def series(samples: list[dict[str, Any]], phase_set: set[str], f) -> list:
    return [f(s) for s in samples if s["phase"] in phase_set]


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return round(60 * cov / var, 2) if var else None


def summarize(samples: list[dict[str, Any]], n_workers: int) -> dict[str, Any]:
    """First and last sample under load, the peak, and what is left after the sockets closed."""
    loaded = {"connected", "load", "settled"}
    load = [s for s in samples if s["phase"] in ("connected", "load")]
    first, last = load[0], load[-1]
    after = next((s for s in samples if s["phase"] == "closed"), None)
    # Growth over the second half of the load, when start-up allocations are done.
    under_load = [s for s in samples if s["phase"] == "load"]
    second_half = under_load[len(under_load) // 2 :]
    workers = []
    for i in range(n_workers):
        rss = series(samples, loaded, lambda s, i=i: s["workers"][i]["rss_kib"])
        fds = series(samples, loaded, lambda s, i=i: s["workers"][i]["fds"])
        workers.append(
            {
                "rss_mib_start": round(first["workers"][i]["rss_kib"] / 1024, 1),
                "rss_mib_end": round(last["workers"][i]["rss_kib"] / 1024, 1),
                "rss_mib_max": round(max(rss) / 1024, 1),
                "rss_mib_per_min_2nd_half": slope_per_minute(
                    [(s["t_s"], s["workers"][i]["rss_kib"] / 1024) for s in second_half]
                ),
                "rss_mib_idle_before": round(samples[0]["workers"][i]["rss_kib"] / 1024, 1),
                "rss_mib_after_close": round(after["workers"][i]["rss_kib"] / 1024, 1) if after else None,
                "fds_start": first["workers"][i]["fds"],
                "fds_end": last["workers"][i]["fds"],
                "fds_max": max(fds),
                "fds_idle_before": samples[0]["workers"][i]["fds"],
                "fds_after_close": after["workers"][i]["fds"] if after else None,
                "fd_kinds_end": last["workers"][i]["fd_kinds"],
                "fd_kinds_after_close": after["workers"][i]["fd_kinds"] if after else None,
                "threads_max": max(series(samples, loaded, lambda s, i=i: s["workers"][i]["threads"])),
            }
        )
    keys = series(samples, loaded, lambda s: sum(s["redis"]["keys"].values()))
    pubsub = series(samples, loaded, lambda s: s["redis"]["pubsub_channels"])
    pg = [c for c in series(samples, loaded, lambda s: s["pg_connections"]) if c is not None]
    return {
        "workers": workers,
        "redis_keys_start": sum(first["redis"]["keys"].values()),
        "redis_keys_end": sum(last["redis"]["keys"].values()),
        "redis_keys_max": max(keys),
        "redis_keys_after_close": after["redis"]["keys"] if after else None,
        "pubsub_channels_start": first["redis"]["pubsub_channels"],
        "pubsub_channels_max": max(pubsub),
        "pubsub_channels_after_close": after["redis"]["pubsub_channels"] if after else None,
        "pubsub_kinds_end": last["redis"]["pubsub_kinds"],
        "pubsub_kinds_after_close": after["redis"]["pubsub_kinds"] if after else None,
        "redis_used_memory_mib_start": round(first["redis"]["used_memory_kib"] / 1024, 1),
        "redis_used_memory_mib_end": round(last["redis"]["used_memory_kib"] / 1024, 1),
        "pg_connections_max": max(pg) if pg else None,
        "redis_client_kills": samples[-1]["redis"]["client_kill_calls"]
        - samples[0]["redis"]["client_kill_calls"],
        "load_minutes_sampled": round((last["t_s"] - first["t_s"]) / 60, 2),
    }


def key_prefixes(tag: str) -> dict[str, str]:
    layer = f"soak-{tag}"  # under it, so that one SCAN (and drop_prefix) finds them all
    return {"layer": layer, "presence": f"{layer}-presence", "rate": f"{layer}-rate"}


def soak_env(tag: str) -> dict[str, str]:
    prefixes = key_prefixes(tag)
    return bench_env(
        CHANNEL_LAYER_PREFIX=prefixes["layer"],
        PRESENCE_KEY_PREFIX=prefixes["presence"],
        CHAT_RATE_KEY_PREFIX=prefixes["rate"],
        # The production rate limit: a realistic chat load stays far under it.
        CHAT_RATE_PER_SECOND="10",
        CHAT_RATE_BURST="20",
    )


@dataclasses.dataclass
class _Run:
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


def _connect(
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


def _load(soak: _Run, cleanup: contextlib.ExitStack, stack: Stack, sampler: Sampler) -> dict[str, Any]:
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


def _quiesce(soak: _Run) -> dict[str, Any]:
    """Step 3: everyone back and every outbox empty, so that the database is final."""
    quiet = soak.clients.all("quiesce", [60.0] * len(soak.parts), timeout=120)
    return {
        "waited_s": round(max(q["waited_s"] for q in quiet), 2),
        "not_live": sum(q["not_live"] for q in quiet),
        "outbox": sum(q["outbox"] for q in quiet),
    }


def _check(soak: _Run, prep: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
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


def _deliveries(sampler: Sampler, seconds: float) -> dict[str, Any]:
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


def _passed(c: dict[str, Any]) -> bool:
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


def run(args: argparse.Namespace, tag: str) -> dict[str, Any]:
    users = args.sockets // 2
    prefixes = key_prefixes(tag)
    env = soak_env(tag)
    seconds = args.minutes * 60
    print(f"== soak {tag}: {users * 2} sockets ({users} users), {args.minutes:g} min", flush=True)
    prep = run_django(["prepare", str(users)], env=env)
    if not prep["chat"]:
        raise RuntimeError("the chat endpoint is not in config.routing")
    floor = run_django(["rooms", str(args.rooms)], env=env)
    rooms = floor["rooms"]
    figures: dict[str, Any] = {"run": tag, "prefixes": prefixes}
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(drop_prefix, prefixes["layer"])  # last: after the workers stop
        stack = cleanup.enter_context(Stack())
        servers = [stack.serve(env=env), stack.serve(env=env)]
        Worker.wait_all_ready(servers, 60, path="/readyz")  # database and channel layer answer
        figures["commands"] = [s.command() for s in servers]
        sampler = Sampler(servers, prefixes, env)
        sampler.take("idle", None)

        agents = plan(prep, rooms, servers, users)
        n_procs = max(1, min(args.client_processes, len(agents)))
        clients = cleanup.enter_context(Clients(n_procs, factory="bench.soak_client:SoakClient"))
        parts = chunks(agents, n_procs)
        steps = _Run(args, tag, env, users, seconds, rooms, servers, agents, parts, clients)
        figures["connect"] = _connect(clients, parts, tag, args)
        sampler.take("connected", clients)
        figures["driver"] = _load(steps, cleanup, stack, sampler)
        figures["quiesce"] = _quiesce(steps)
        figures["check"] = check = _check(steps, prep, floor)
        sampler.take("settled", clients)

        # Close every socket; what the workers hold afterwards is what they would leak.
        clients.stop()
        figures["close_settle_s"] = round(settle_after_close(servers, sampler), 1)
        sampler.take("closed", None)
        figures["worker_logs"] = [worker_log_summary(s) for s in servers]
    # The workers have stopped (SIGTERM, drained) and the run's keys are deleted.

    figures["deliveries"] = _deliveries(sampler, seconds)
    figures["summary"] = summarize(sampler.samples, len(servers))
    figures["samples"] = sampler.samples
    figures["passed"] = _passed(check)
    return figures


# --- output ----------------------------------------------------------------------------------
def kinds(counts: dict[str, int] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) if counts else "n/a"


def summary_lines(doc: dict[str, Any]) -> list[str]:
    f = doc["figures"]
    if "error" in f:
        return [f"ERROR: {f['error']}"]
    c, s, d, cfg = f["check"], f["summary"], f["deliveries"], doc["config"]
    lines = [
        f"gaps {c['gaps']}, duplicates within a connection {c['duplicates']}, ids not in the database "
        f"{c['phantoms']}: {'PASS' if f['passed'] else 'FAIL'}",
        f"received {c['received']:,} of {c['expected']:,} expected ids over {c['connections']:,} connections "
        f"of {c['agents']:,} clients ({c['redelivered']:,} re-deliveries across reconnects, dropped by the "
        f"client as the browser does); converged {c['converge_s']} s after the load",
        f"posts: {c['posts_sent']:,} sent, {c['posts_acked']:,} acknowledged, {c['posts_stored']:,} stored, "
        f"{c['posts_resent']:,} re-sent from the outbox, {c['posts_rejected']:,} rejected; "
        f"ack p50/p99 {c['post_ack_p50_ms']}/{c['post_ack_p99_ms']} ms",
        f"notify(): {f['driver']['sent']:,} single + {f['driver']['group_sends']:,} groups of "
        f"{min(cfg['group_size'], cfg['users'])}; call p50/p99 {f['driver']['notify_call_p50_ms']:.1f}/"
        f"{f['driver']['notify_call_p99_ms']:.1f} ms",
        f"deliveries {d['delivered_during_load']:,} ({d['per_s']:,}/s); live push latency p50/p99/max "
        f"{d['latency_p50_ms']:,}/{d['latency_p99_ms']:,}/{d['latency_max_ms']:,} ms",
        f"reconnects: {c['churned']:,} dropped by the clients, server closes {c['server_closes']}, "
        f"{c['resumes']:,} resumes, {c['dead_links']} dead links, {c['pings']:,} pings",
        f"after the clients closed, the workers' sockets and the pub/sub channels settled in "
        f"{f.get('close_settle_s', 'n/a')} s",
    ]
    if not f["passed"]:
        lines.append(
            f"FAILED: {c['agents_with_gaps']} clients with gaps, {c['never_connected']} never connected, "
            f"{c['not_live_at_end']} not back at the end, {c['outbox_left']} posts never acknowledged, "
            f"{c['posts_rejected']} rejected; examples {c['gap_samples'][:3]}"
        )
    for i, w in enumerate(s["workers"], 1):
        lines.append(
            f"worker {i}: RSS {w['rss_mib_idle_before']} MiB idle, "
            f"{w['rss_mib_start']} -> {w['rss_mib_end']} MiB under load (max {w['rss_mib_max']}, "
            f"{w['rss_mib_per_min_2nd_half']} MiB/min over its second half), "
            f"{w['rss_mib_after_close']} after close; fds "
            f"{w['fds_idle_before']} idle, {w['fds_start']} -> {w['fds_end']} (max {w['fds_max']}), "
            f"{w['fds_after_close']} after close ({kinds(w['fd_kinds_after_close'])}); "
            f"threads max {w['threads_max']}"
        )
    lines.append(
        f"Redis keys of the run: {s['redis_keys_start']} -> {s['redis_keys_end']} "
        f"(max {s['redis_keys_max']}), after close {kinds(s['redis_keys_after_close'])}; "
        f"pub/sub channels {s['pubsub_channels_start']} "
        f"(max {s['pubsub_channels_max']}), after close {s['pubsub_channels_after_close']} "
        f"({kinds(s['pubsub_kinds_after_close'])}); used_memory "
        f"{s['redis_used_memory_mib_start']} -> {s['redis_used_memory_mib_end']} MiB (server-wide); "
        f"PostgreSQL connections max {s['pg_connections_max']}; CLIENT KILL calls to that Redis "
        f"during the run (anyone's): {s.get('redis_client_kills', 'n/a')}"
    )
    logs = f["worker_logs"]
    lines.append(
        "worker logs: "
        + "; ".join(
            f"{w['warnings']} warnings, {w['errors']} errors, {w['tracebacks']} tracebacks" for w in logs
        )
    )
    for w in logs:
        for line, n in w["top"].items():
            lines.append(f"  {n} x {line}")
    return lines


def markdown(doc: dict[str, Any]) -> str:
    f, cfg = doc["figures"], doc["config"]
    scale = (cfg["sockets"], cfg["minutes"])
    small = scale[0] < FULL_SCALE[0] or scale[1] < FULL_SCALE[1]
    head = [
        f"### Latest run: {cfg['sockets']:,} sockets, {cfg['minutes']:g} minute"
        + ("" if cfg["minutes"] == 1 else "s")
        + (" (validation at small scale)" if small else ""),
        "",
        f"Run {doc['date']} on {doc['cores']} cores ({doc['machine']}), `{doc['invocation']}`, "
        f"{doc['elapsed_s']} s in all. {cfg['users']:,} users in {cfg['rooms']} rooms; {cfg['chat_rate']:g} "
        f"posts/s per room, notify() {cfg['notify_rate']:g}/s plus {min(cfg['group_size'], cfg['users'])} "
        f"users every {cfg['group_every']:g} s, {cfg['churn']:g} % of sockets dropped per minute.",
        "",
    ]
    if small:
        head += [
            f"_This is not the issue's run ({FULL_SCALE[0]:,} sockets for {FULL_SCALE[1]:g} minutes); "
            "see the command above._",
            "",
        ]
    if "error" in f:
        return "\n".join([*head, f"**The run failed:** {f['error']}", ""])
    body = ["```", *summary_lines(doc), "```", "", markdown_table(f["samples"]), ""]
    return "\n".join(head + body)


def write_docs(doc: dict[str, Any]) -> None:
    text = DOC.read_text()
    if DOC_BEGIN not in text or DOC_END not in text:
        raise RuntimeError(f"{DOC} has no soak markers")
    before, rest = text.split(DOC_BEGIN, 1)
    _, after = rest.split(DOC_END, 1)
    DOC.write_text(f"{before}{DOC_BEGIN}\n{markdown(doc)}\n{DOC_END}{after}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.docs:
        write_docs(json.loads(RESULT.read_text()))
        print(f"wrote the soak section of {DOC}")
        return 0
    nofile = raise_nofile()
    # Each socket is a descriptor in a worker and in a load generator, plus slack.
    if nofile < args.sockets + 1024:
        print(f"open-file limit {nofile} is too low for {args.sockets} sockets", file=sys.stderr)
        return 2
    # A SIGTERM becomes KeyboardInterrupt, so every `with` stops what it started.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return soak(args, nofile, argv if argv is not None else sys.argv[1:])
    finally:
        signal.signal(signal.SIGTERM, previous)


def soak(args: argparse.Namespace, nofile: int, argv: list[str]) -> int:
    tag = uuid.uuid4().hex[:8]
    env = soak_env(tag)
    started = time.monotonic()
    config = {k: v for k, v in vars(args).items() if k not in ("no_save", "docs")}
    config["users"] = args.sockets // 2
    config["sockets"] = config["users"] * 2
    doc: dict[str, Any] = {
        "workload": "soak",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}",
        "nofile": nofile,
        "versions": versions(),
        "env": {k: env.get(k, "") for k in RECORDED_ENV},
        "invocation": "python -m bench.soak " + " ".join(argv),
        "config": config,
    }
    try:
        doc["figures"] = run(args, tag)
        status = 0 if doc["figures"]["passed"] else 1
    except KeyboardInterrupt:
        print("interrupted; workers and clients stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        traceback.print_exc()
        doc["figures"] = {"error": f"{type(exc).__name__}: {exc}"}
        status = 1
    doc["elapsed_s"] = round(time.monotonic() - started, 1)
    print("\n".join(summary_lines(doc)))
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        RESULT.write_text(json.dumps(doc, indent=1) + "\n")
        write_docs(doc)
        print(f"wrote {RESULT} and the soak section of {DOC}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
