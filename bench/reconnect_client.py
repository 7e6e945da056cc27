"""The reconnect workload's load generator: the soak's browser-like agents, timed through a storm.

Runs in `bench.client_procs` processes (`Clients(n, factory="bench.reconnect_client:ReconnectClient")`).
Each agent is one user's socket (bench/browser_agent.py: the browser client's backoff and
full jitter, within 1 s after 1012, `resume` after every later `welcome`, ids recorded per
connection). What this adds:

- a load balancer's view of the workers: after a 1012 or a connection cut without a close frame
  (plain Channels' drain), or when nothing listens on its worker (a drained one), an agent's next
  attempt goes to the next URL of its list;
- `tutorial` agents for the plain Channels baseline, which sends no `welcome`: open is back;
- timings from a mark (the moment of the fault, `storm`): when each agent lost its socket and when
  it was back (welcome received and resume done), each handshake's worker, time and duration
  (first byte sent to welcome), and the failed openings and server closes by kind since the mark.

Commands (besides the soak's start, converge and close): storm, progress, report.
"""

from __future__ import annotations

import asyncio
from array import array
from typing import Any

from bench.browser_agent import RESTARTING, Agent, Conn, failure_kind, tally
from bench.client import cpu_seconds, now_ns
from bench.soak_client import SoakClient

# During a storm an opening is given up after this long (the upgrade, then the welcome): a browser
# waits at least as long for a WebSocket to open, and realtime.js drops an open one that says
# nothing for 25 s.
STORM_TIMEOUT_S = 60.0


class ReconnectAgent(Agent):
    def __init__(self, client: ReconnectClient, index: int, spec: dict[str, Any]) -> None:
        super().__init__(client, index, spec)
        self.client: ReconnectClient = client
        self.dropped_ns = 0  # the first loss of its socket since the mark, else 0
        self.live_ns = 0  # the last time it became live (welcomed, replay done)
        self.late = 0  # ids first received in a replay (after a reconnect) rather than live
        # The tutorial's consumer takes every frame for a chat message: a ping would crash it (1011).
        self.pings = self.kind != "tutorial"

    def on_open(self, conn: Conn) -> None:
        if self.kind == "tutorial":  # the baseline sends nothing: an open socket is a welcomed one
            self.conn = conn
            self.connections += 1
            self.attempt = 0
            self.start_id = self.last_id = 0
            self._live(conn)
            conn.welcomed.set_result(None)

    def _live(self, conn: Conn) -> None:
        super()._live(conn)
        self.live_ns = now_ns()

    def _item(self, conn: Conn, item: dict[str, Any]) -> None:
        if conn.replaying and item["id"] not in self.seen:
            self.late += 1
        super()._item(conn, item)

    def on_disconnected(self, conn: Conn) -> None:
        if self.conn is conn and not self.client.stopping:
            if not self.dropped_ns and self.client.mark_ns:
                self.dropped_ns = now_ns()
            if conn.close_code in (RESTARTING, None) and not conn.dead_link:
                self.next_worker()  # 1012, or the connection cut: the worker is going away
        super().on_disconnected(conn)

    def next_worker(self) -> None:
        self.worker = (self.worker + 1) % len(self.urls)

    def handshake_done(self, started_ns: int) -> None:
        client = self.client
        if client.mark_ns:  # timed from the first storm on
            at = now_ns()
            client.welcomes[self.worker].append(at)
            client.handshake_ns.append(at - started_ns)

    def handshake_failed(self, exc: BaseException, conn: Conn | None) -> None:
        kind = failure_kind(exc, conn)
        tally(self.client.failed, kind)
        if kind == "refused" or (conn is not None and conn.close_code == RESTARTING):
            self.next_worker()  # what a load balancer does once the worker has left it


class ReconnectClient(SoakClient):
    agent_class = ReconnectAgent

    def __init__(self) -> None:
        super().__init__()
        self.agents: list[ReconnectAgent]
        self.mark_ns = 0
        self.cpu_at_mark = 0.0
        self.welcomes: list[array] = []
        self.handshake_ns = array("q")
        self.failed: dict[str, int] = {}
        self.closes_at_mark: dict[Any, int] = {}
        self.counts_at_mark: dict[str, int] = {}
        self.drop_workers: set[int] = set()
        self.must_drop: list[ReconnectAgent] = []

    async def dispatch(self, cmd: str, arg: Any) -> dict[str, Any]:
        if cmd == "storm":
            return self.storm(arg)
        if cmd == "progress":
            return self.progress()
        if cmd == "report":
            return self.report()
        return await super().dispatch(cmd, arg)

    def _counters(self) -> dict[str, int]:
        return {
            "late": sum(a.late for a in self.agents),
            "duplicates": sum(a.duplicates for a in self.agents),
            "redelivered": sum(a.redelivered for a in self.agents),
            "resumes": self.resumes,
        }

    def storm(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The fault is about to happen: time everything from `mark_ns` (the parent's clock, the same
        CLOCK_MONOTONIC). Agents on `drop_workers` must lose their socket; in-flight openings are
        bounded by `concurrency` per process (none, in effect, by default: a browser has no gate),
        each by `timeout` seconds."""
        self.mark_ns = spec["mark_ns"]
        self.cpu_at_mark = cpu_seconds()
        self.gate = asyncio.Semaphore(spec.get("concurrency", 1_000_000))
        self.timeout = spec.get("timeout", STORM_TIMEOUT_S)
        self.welcomes = [array("q") for _ in range(spec["workers"])]
        self.handshake_ns = array("q")
        self.failed = {}
        self.closes_at_mark = dict(self.server_closes)
        self.counts_at_mark = self._counters()
        self.drop_workers = set(spec["drop_workers"])
        for agent in self.agents:
            agent.dropped_ns = 0
        self.must_drop = [a for a in self.agents if a.worker in self.drop_workers]
        return {"must_drop": len(self.must_drop)}

    def progress(self) -> dict[str, Any]:
        """How many of the agents that must lose their socket have lost it, and how many are back."""
        dropped = [a for a in self.agents if a.dropped_ns]
        return {
            "agents": len(self.agents),
            "must_drop": len(self.must_drop),
            "must_drop_dropped": sum(1 for a in self.must_drop if a.dropped_ns),
            "dropped": len(dropped),
            "back": sum(1 for a in dropped if a.live and a.live_ns > a.dropped_ns),
            "live": sum(1 for a in self.agents if a.live),
        }

    def report(self) -> dict[str, Any]:
        """Per dropped agent: when it lost its socket and when it was back (-1: not back), in ns from
        the mark; handshakes since the mark; failures and closes by kind; counters since the mark."""
        dropped, back = array("q"), array("q")
        for agent in self.agents:
            if agent.dropped_ns:
                dropped.append(agent.dropped_ns - self.mark_ns)
                ok = agent.live and agent.live_ns > agent.dropped_ns
                back.append(agent.live_ns - self.mark_ns if ok else -1)
        closes = {
            str(k): v - self.closes_at_mark.get(k, 0)
            for k, v in self.server_closes.items()
            if v > self.closes_at_mark.get(k, 0)
        }
        now = self._counters()
        return {
            "agents": len(self.agents),
            "must_drop": len(self.must_drop),
            "not_dropped": sum(1 for a in self.must_drop if not a.dropped_ns),
            "dropped": dropped.tobytes(),
            "back": back.tobytes(),
            "live": sum(1 for a in self.agents if a.live),
            "welcomes": [w.tobytes() for w in self.welcomes],
            "handshake_ns": self.handshake_ns.tobytes(),
            "failed": dict(self.failed),
            "client_cpu_s": cpu_seconds() - self.cpu_at_mark,
            "closes": closes,
            **{k: now[k] - self.counts_at_mark.get(k, 0) for k in now},
        }
