"""What the soak samples while it runs (bench/soak.py): each worker's RSS, descriptors by kind,
threads, CPU and open sockets (its /metrics), the run's Redis keys and pub/sub channels, Redis
memory, the database's connections and the clients' state; the wait for the workers to let go
after the clients close; and a summary of each worker's log."""

from __future__ import annotations

import contextlib
import os
import re
import time
import urllib.parse
import urllib.request
from array import array
from pathlib import Path
from typing import Any

from bench.client_procs import Clients
from bench.common import proc_cpu_seconds, proc_rss_kib, redis_client
from bench.soak_report import row_text
from bench.stats import lat_stats
from realtime.launcher import Worker


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
