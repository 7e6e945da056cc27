"""The soak's load generator: long-lived clients that behave like static/js/realtime.js.

Runs in `bench.client` processes (`Clients(n, factory="bench.soak_client:SoakClient")`),
driven over the same pipe. Each *agent* is one logical client: one user's
socket on one endpoint (a chat room or the inbox), across all its
reconnects. Like the browser client it starts from `welcome.last_id`, sends
`resume {after: last_id}` after every later `welcome` (again while
`replay_done.more`), moves `last_id` only outside replays, pings after 15 s
of silence and drops a link that stays silent 10 s more, backs off with full
jitter (within 1 s after 1012), and keeps an outbox of chat posts that it
re-sends after a reconnect until the server echoes their `client_id`.

It records every id it is handed, per connection and per agent, so that the
parent can compare them with the database at the end: an id twice within one
connection is a duplicate (the contract forbids it); an id again in a later
connection is a re-delivery (allowed across reconnects; the browser drops
it); an id in the database that never arrived is a gap.

Commands: start, load, stats, stop_load, quiesce, converge, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
from array import array
from typing import Any

import orjson
from picows import WSCloseCode, WSListener, WSMsgType, WSTransport, ws_connect

from bench.client import now_ns

PING_AFTER_NS = 15 * 10**9  # the browser client's pingInterval
PONG_TIMEOUT_NS = 10 * 10**9  # and its pongTimeout
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
RETRY_CODES = {"rate_limited", "unavailable", "server_error"}  # the outbox re-sends these


def _count(counter: dict, key: Any, n: int = 1) -> None:
    counter[key] = counter.get(key, 0) + n


class Conn(WSListener):
    """One WebSocket connection of an agent."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.transport: WSTransport | None = None
        self.welcomed = asyncio.get_running_loop().create_future()
        self.got: set[int] = set()
        self.replaying = False
        self.live = False  # welcomed and not replaying
        self.last_frame_ns = now_ns()
        self.ping_sent_ns = 0
        self.close_code: int | None = None
        self.dropped = False  # closed by us on purpose (churn, end of run)
        self.dead_link = False  # dropped by the ping check; reconnects like a server close

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        self.agent.client.changed.set()
        self.last_frame_ns = now_ns()
        self.ping_sent_ns = 0  # anything at all proves the link
        if frame.msg_type == WSMsgType.TEXT:
            self.agent.on_frame(self, orjson.loads(frame.get_payload_as_bytes()))
        elif frame.msg_type == WSMsgType.CLOSE:
            self.close_code = frame.get_close_code()
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.agent.client.changed.set()
        if not self.welcomed.done():
            self.welcomed.set_exception(ConnectionError(f"closed before welcome ({self.close_code or 1006})"))
        self.agent.on_disconnected(self)

    def send(self, frame: dict[str, Any]) -> None:
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.send(WSMsgType.TEXT, orjson.dumps(frame))


class Agent:
    def __init__(self, client: SoakClient, index: int, spec: dict[str, Any]) -> None:
        self.client = client
        self.index = index
        self.key: str = spec["key"]
        self.kind: str = spec["kind"]  # "chat" or "notif"
        self.item = "message" if self.kind == "chat" else "notification"
        self.scope = str(spec["scope"])  # room slug or recipient pk: where its ids come from
        self.urls: list[str] = spec["urls"]
        self.worker: int = spec["worker"]
        self.headers = [tuple(h) for h in spec["headers"]]
        self.conn: Conn | None = None
        self.connecting = False
        self.failures = 0  # failed attempts since the last welcome (the backoff exponent)
        self.start_id: int | None = None
        self.last_id: int | None = None
        self.seen: set[int] = set()
        self.connections = 0
        self.duplicates = 0
        self.redelivered = 0
        self.out_of_order = 0
        self.pending: dict[str, tuple[str, int]] = {}  # outbox: client_id -> (body, first send)
        self.resent: set[str] = set()
        self.seq = 0

    @property
    def live(self) -> bool:
        return self.conn is not None and self.conn.live

    # --- frames -------------------------------------------------------------------------------
    def on_frame(self, conn: Conn, data: dict[str, Any]) -> None:
        kind = data.get("type")
        client = self.client
        if kind == self.item:
            self._item(conn, data[self.item])
        elif kind == "welcome":
            self.conn = conn
            self.connections += 1
            self.failures = 0
            if self.last_id is None:  # a fresh client starts from welcome
                self.start_id = self.last_id = data.get("last_id") or 0
                self._live(conn)
            else:
                conn.replaying = True
                client.resumes += 1
                conn.send({"type": "resume", "after": self.last_id})
            if not conn.welcomed.done():
                conn.welcomed.set_result(None)
        elif kind == "replay_done":
            self.last_id = data.get("last_id") or self.last_id
            if data.get("more"):
                conn.send({"type": "resume", "after": self.last_id})
            else:
                self._live(conn)
        elif kind == "error":
            code = data.get("code")
            _count(client.error_codes, code)
            ref = data.get("ref")
            if ref in self.pending:
                if code in RETRY_CODES:
                    asyncio.get_running_loop().call_later(1.0, self._resend, ref)
                else:
                    del self.pending[ref]
                    client.posts_rejected += 1
        elif kind == "pong":
            pass
        else:
            _count(client.other_frames, kind)

    def _item(self, conn: Conn, item: dict[str, Any]) -> None:
        client = self.client
        at = now_ns()
        pk = item["id"]
        client_id = item.get("client_id") if self.kind == "chat" else None
        if client_id in self.pending:
            client.posts_acked += 1
            client.ack_ns.append(at - self.pending.pop(client_id)[1])
            if client_id in self.resent and pk in conn.got:
                # The server answers a re-sent client_id with the original: not a second delivery.
                client.resend_echoes += 1
                return
        if pk in conn.got:
            self.duplicates += 1
            return
        conn.got.add(pk)
        if pk in self.seen:
            self.redelivered += 1
        else:
            self.seen.add(pk)
            client.delivered += 1
        if conn.replaying:
            return
        if self.last_id is not None and pk <= self.last_id and client_id not in self.resent:
            self.out_of_order += 1
        self.last_id = max(self.last_id or 0, pk)
        sent = self._sent_ns(item)
        if sent:
            client.lat.append(at - sent)

    def _sent_ns(self, item: dict[str, Any]) -> int:
        """The send time our own posts and the notify() driver embed (same clock)."""
        if self.kind == "chat":
            parts = item.get("body", "").split(":")
            if len(parts) == 3 and parts[0] == "soak" and parts[1] == self.client.run:
                return int(parts[2])
            return 0
        extra = item.get("data") or {}
        return int(extra["t"]) if extra.get("run") == self.client.run and "t" in extra else 0

    def _live(self, conn: Conn) -> None:
        conn.replaying = False
        conn.live = True
        for client_id in list(self.pending):  # the outbox goes out again after every welcome
            self._resend(client_id)

    # --- posting ------------------------------------------------------------------------------
    def post(self) -> None:
        client = self.client
        self.seq += 1
        client_id = f"{client.run}-{self.index}-{self.seq}"
        body = f"soak:{client.run}:{now_ns()}"
        self.pending[client_id] = (body, now_ns())
        client.posts_sent += 1
        self.conn.send({"type": "typing"})
        self.conn.send({"type": "message", "body": body, "client_id": client_id, "ref": client_id})

    def _resend(self, client_id: str) -> None:
        if client_id in self.pending and self.live:
            self.resent.add(client_id)
            self.client.posts_resent += 1
            body = self.pending[client_id][0]
            self.conn.send({"type": "message", "body": body, "client_id": client_id, "ref": client_id})

    # --- connection lifecycle -----------------------------------------------------------------
    def on_disconnected(self, conn: Conn) -> None:
        client = self.client
        if self.conn is not conn:
            return  # an attempt that never got welcome: its connect loop goes on
        self.conn = None
        if client.stopping:
            return
        if conn.dropped:
            # Churn: the user closed the tab or lost the network; back a little later,
            # through the load balancer, so maybe on the other worker.
            if random.random() < 0.5:
                self.worker = 1 - self.worker if len(self.urls) == 2 else self.worker
            self.reconnect(random.uniform(0.2, 3.0))
            return
        code = "dead_link" if conn.dead_link else (conn.close_code or 1006)
        _count(client.server_closes, code)
        # The browser client's rule: within 1 s after a restart, else full jitter.
        delay = random.uniform(0, 1.0) if code == 1012 else random.uniform(0, BACKOFF_BASE)
        self.reconnect(delay)

    def reconnect(self, delay: float) -> None:
        if not self.connecting and not self.client.stopping:
            self.client.spawn(self.connect(delay))

    async def connect(self, delay: float = 0.0) -> bool:
        """Connect until a welcome (or the end of the run); True once welcomed."""
        client = self.client
        self.connecting = True
        try:
            await asyncio.sleep(delay)
            while not client.stopping:
                conn = None
                async with client.gate:
                    try:
                        _, conn = await ws_connect(
                            lambda: Conn(self),
                            self.urls[self.worker],
                            extra_headers=self.headers,
                            websocket_handshake_timeout=client.timeout,
                        )
                        await asyncio.wait_for(asyncio.shield(conn.welcomed), client.timeout)
                        if self.conn is conn:
                            return True
                        # It closed right after welcome: on_disconnected saw us still
                        # connecting and left the retry to this loop.
                    except Exception as exc:
                        _count(client.connect_errors, (type(exc).__name__ + f": {exc}")[:100])
                        if conn is not None and conn.transport is not None:
                            conn.dropped = True
                            conn.transport.disconnect()
                self.failures += 1
                cap = min(BACKOFF_MAX, BACKOFF_BASE * 2**self.failures)
                await asyncio.sleep(random.uniform(0, cap))
            return False
        finally:
            self.connecting = False

    def drop(self, clean: bool) -> None:
        conn = self.conn
        if conn is None or conn.transport is None:
            return
        conn.dropped = True
        if clean:
            conn.transport.send_close(WSCloseCode.GOING_AWAY)  # a closed tab
        conn.transport.disconnect()  # without a close frame: a lost network

    # --- the end ------------------------------------------------------------------------------
    def expected(self, ids: list[int]) -> set[int]:
        start = self.start_id if self.start_id is not None else float("inf")
        return {pk for pk in ids if pk > start}


class SoakClient:
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
        self.agents = [Agent(self, spec["index_base"] + i, a) for i, a in enumerate(spec["agents"])]
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
                if conn is None:
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
