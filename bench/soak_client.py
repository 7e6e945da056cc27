"""The soak's load generator: long-lived clients that behave like static/js/realtime.js.

Runs in `bench.client_procs` processes (`Clients(n, factory="bench.soak_client:SoakClient")`),
driven over the same pipe. Each *agent* (bench/browser_agent.py) is one logical client: one
user's socket on one endpoint, across all its reconnects, resuming and backing off as the
browser does. This module runs them: their first connections (bounded concurrency), the load
(posts and churn), the browser's dead-link check over all of them, and the end: every agent's
ids against the database's, so that the parent sees gaps, duplicates and ids that are not there.

Commands: start, load, stats, stop_load, quiesce, converge, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
from array import array
from typing import Any

from picows import WSCloseCode

from bench.browser_agent import PING_AFTER_NS, PONG_TIMEOUT_NS, Agent
from bench.client import now_ns


class SoakClient:
    agent_class = Agent

    def __init__(self) -> None:
        self.agents: list[Agent] = []
        self.tasks: set[asyncio.Task] = set()
        self.load_tasks: list[asyncio.Task] = []
        self.stopping = False
        self.run = ""
        self.timeout = 30.0
        self.gate = asyncio.Semaphore(25)
        self.changed = asyncio.Event()
        self.lat = array("q")
        self.ack_ns = array("q")
        self.delivered = 0
        self.posts_sent = self.posts_acked = self.posts_resent = self.posts_rejected = 0
        self.posts_skipped = 0  # due while the chosen agent was reconnecting
        self.resend_echoes = 0
        self.resumes = 0
        self.churned = 0
        self.pings = 0
        self.dead_links = 0
        self.error_codes: dict[str, int] = {}
        self.other_frames: dict[str, int] = {}
        self.server_closes: dict[int, int] = {}
        self.connect_errors: dict[str, int] = {}

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def dispatch(self, cmd: str, arg: Any) -> dict[str, Any]:
        if cmd == "start":
            return await self.start(arg)
        if cmd == "load":
            return self.load(arg)
        if cmd == "stats":
            return self.stats()
        if cmd == "stop_load":
            return await self.stop_load()
        if cmd == "quiesce":
            return await self.quiesce(arg)
        if cmd == "converge":
            return await self.converge(arg)
        if cmd == "close":
            return await self.close()
        return {"error": f"unknown command {cmd}"}

    async def start(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Open every agent's first connection (bounded concurrency); wait for all welcomes."""
        self.run = spec["run"]
        self.timeout = spec.get("timeout", 30.0)
        self.gate = asyncio.Semaphore(spec.get("concurrency", 25))
        random.seed(spec.get("seed"))
        self.agents = [
            self.agent_class(self, spec["index_base"] + i, a) for i, a in enumerate(spec["agents"])
        ]
        self.load_tasks.append(self.spawn(self._watch_links()))
        t0 = now_ns()
        firsts = [self.spawn(agent.connect()) for agent in self.agents]
        done, _ = await asyncio.wait(firsts, timeout=spec.get("connect_limit", 300))
        return {
            "agents": len(self.agents),
            "connected": sum(1 for a in self.agents if a.connections),
            "seconds": (now_ns() - t0) / 1e9,
            "gave_up_waiting": len(firsts) - len(done),
            "errors": dict(self.connect_errors),
        }

    def load(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Start posting and churning for `seconds`; both stop by themselves."""
        deadline = now_ns() + int(spec["seconds"] * 1e9)
        chat = [a for a in self.agents if a.kind == "chat"]
        if chat and spec["post_rate"] > 0:
            self.load_tasks.append(self.spawn(self._paced(spec["post_rate"], deadline, self._post, chat)))
        if spec["churn_rate"] > 0:
            self.load_tasks.append(
                self.spawn(self._paced(spec["churn_rate"], deadline, self._churn, self.agents))
            )
        return {"started": True}

    async def _paced(self, rate: float, deadline: int, action, agents: list[Agent]) -> None:
        """Call `action(random agent)` `rate` times per second, on a fixed schedule, until `deadline`."""
        start = now_ns()
        i = 0
        while True:
            due = start + int(i * 1e9 / rate)
            if due >= deadline:
                return
            delay = (due - now_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            action(random.choice(agents))
            i += 1

    def _post(self, agent: Agent) -> None:
        if agent.live:
            agent.post()
        else:
            self.posts_skipped += 1

    def _churn(self, agent: Agent) -> None:
        if agent.live:
            self.churned += 1
            agent.drop(clean=random.random() < 0.5)

    async def _watch_links(self) -> None:
        """The browser's dead-link check: ping after 15 s of silence, drop after 10 s more."""
        while not self.stopping:
            await asyncio.sleep(1.0)
            t = now_ns()
            for agent in self.agents:
                conn = agent.conn
                if conn is None or not agent.pings:
                    continue
                if conn.ping_sent_ns and t - conn.ping_sent_ns > PONG_TIMEOUT_NS:
                    self.dead_links += 1
                    conn.dead_link = True
                    conn.transport.disconnect()
                elif not conn.ping_sent_ns and t - conn.last_frame_ns > PING_AFTER_NS:
                    conn.ping_sent_ns = t
                    self.pings += 1
                    conn.send({"type": "ping"})

    def stats(self) -> dict[str, Any]:
        """A snapshot for the sampler; latencies since the previous snapshot."""
        lat, self.lat = self.lat, array("q")
        return {
            "agents": len(self.agents),
            "live": sum(1 for a in self.agents if a.live),
            "connected": sum(1 for a in self.agents if a.conn is not None),
            "reconnecting": sum(1 for a in self.agents if a.connecting),
            "delivered": self.delivered,
            "posts_sent": self.posts_sent,
            "posts_acked": self.posts_acked,
            "churned": self.churned,
            "resumes": self.resumes,
            "server_closes": dict(self.server_closes),
            "lat": lat.tobytes(),
            "rss_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }

    async def stop_load(self) -> dict[str, Any]:
        for task in self.load_tasks[1:]:  # the link watcher stays until close
            task.cancel()
        await asyncio.gather(*self.load_tasks[1:], return_exceptions=True)
        del self.load_tasks[1:]
        return {"stopped": True}

    async def _until(self, check, limit: float) -> float:
        """Wait until `check()` holds, at most `limit` seconds; it is tried again after every
        frame and every disconnect (what changes an agent's state). Returns the seconds waited."""
        t0 = now_ns()
        deadline = t0 + int(limit * 1e9)
        while not check():
            remaining = (deadline - now_ns()) / 1e9
            if remaining <= 0:
                break
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return (now_ns() - t0) / 1e9

    async def quiesce(self, limit: float) -> dict[str, Any]:
        """After the load: wait (bounded) until every agent is live and every outbox is empty,
        so that the database holds every post before the parent reads it."""
        waited = await self._until(lambda: all(a.live and not a.pending for a in self.agents), limit)
        return {
            "waited_s": waited,
            "not_live": sum(1 for a in self.agents if not a.live),
            "outbox": sum(len(a.pending) for a in self.agents),
        }

    async def converge(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Wait (bounded) until every agent is live with an empty outbox and has every expected id."""
        scopes = {"chat": spec["messages"], "notif": spec["notifications"]}
        expected: dict[int, set[int]] = {}

        def settled(agent: Agent) -> bool:
            if not agent.live or agent.pending or agent.start_id is None:
                return False
            if agent.index not in expected:
                expected[agent.index] = agent.expected(scopes[agent.kind].get(agent.scope, []))
            return expected[agent.index] <= agent.seen

        waited = await self._until(lambda: all(settled(a) for a in self.agents), spec["limit"])
        out: dict[str, Any] = {
            "converge_s": waited,
            "agents": len(self.agents),
            "never_connected": 0,
            "not_live_at_end": 0,
            "connections": 0,
            "expected": 0,
            "received": 0,
            "gaps": 0,
            "gaps_of_live": 0,  # of agents live at the end (the others may not have resumed yet)
            "agents_with_gaps": 0,
            "phantoms": 0,
            "duplicates": 0,
            "redelivered": 0,
            "out_of_order": 0,
            "outbox_left": 0,
            "gap_samples": [],
        }
        for agent in self.agents:
            ids = scopes[agent.kind].get(agent.scope, [])
            out["connections"] += agent.connections
            out["duplicates"] += agent.duplicates
            out["redelivered"] += agent.redelivered
            out["out_of_order"] += agent.out_of_order
            out["outbox_left"] += len(agent.pending)
            out["not_live_at_end"] += 0 if agent.live else 1
            if agent.start_id is None:
                out["never_connected"] += 1
                continue
            want = agent.expected(ids)
            missing = want - agent.seen
            out["expected"] += len(want)
            out["received"] += len(want & agent.seen)
            out["phantoms"] += len(agent.seen - set(ids))
            if missing:
                out["gaps"] += len(missing)
                out["gaps_of_live"] += len(missing) if agent.live else 0
                out["agents_with_gaps"] += 1
                if len(out["gap_samples"]) < 10:
                    out["gap_samples"].append({"agent": agent.key, "missing": sorted(missing)[:10]})
        out.update(
            {
                "posts_sent": self.posts_sent,
                "posts_acked": self.posts_acked,
                "posts_resent": self.posts_resent,
                "posts_rejected": self.posts_rejected,
                "posts_skipped": self.posts_skipped,
                "resend_echoes": self.resend_echoes,
                "ack": self.ack_ns.tobytes(),
                "delivered": self.delivered,
                "churned": self.churned,
                "resumes": self.resumes,
                "pings": self.pings,
                "dead_links": self.dead_links,
                "server_closes": dict(self.server_closes),
                "error_codes": dict(self.error_codes),
                "connect_errors": dict(self.connect_errors),
                "other_frames": dict(self.other_frames),
            }
        )
        return out

    async def close(self) -> dict[str, Any]:
        self.stopping = True
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for agent in self.agents:
            conn = agent.conn
            if conn is not None and conn.transport is not None:
                conn.dropped = True
                with contextlib.suppress(Exception):
                    conn.transport.send_close(WSCloseCode.GOING_AWAY)
                    conn.transport.disconnect()
        await asyncio.sleep(0.2)  # let the close frames go out
        return {"closed": True}
