"""One browser-like client of the bench: what static/js/realtime.js does, on picows.

An `Agent` is one logical client: one user's socket on one endpoint (a chat room or the inbox),
across all its reconnects. Like the browser client it starts from `welcome.last_id`, sends
`resume {after: last_id}` after every later `welcome` (again while `replay_done.more`), moves
`last_id` only outside replays, backs off with full jitter (within 1 s after 1012:
`Agent.next_delay`, the browser's `nextDelay`), and keeps an outbox of chat posts that it re-sends
after a reconnect until the server echoes their `client_id`. The dead-link check (ping after 15 s
of silence, drop after 10 s more) is run over all agents by their client (`SoakClient`).

It records every id it is handed, per connection and per agent: an id twice within one connection
is a duplicate (the contract forbids it); an id again in a later connection is a re-delivery
(allowed across reconnects; the browser drops it). Used by the soak (bench/soak_client.py) and the
reconnect workload (bench/reconnect_client.py, which adds timings).
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

import orjson
from picows import WSCloseCode, WSInvalidStatusError, WSListener, WSMsgType, WSTransport, ws_connect

from bench.client import now_ns

if TYPE_CHECKING:
    from bench.soak_client import SoakClient


PING_AFTER_NS = 15 * 10**9  # the browser client's pingInterval
PONG_TIMEOUT_NS = 10 * 10**9  # and its pongTimeout
BACKOFF_BASE = 0.5  # the browser client's baseDelay, maxDelay and restartJitter, in seconds
BACKOFF_MAX = 30.0
RESTART_JITTER = 1.0
RESTARTING = 1012
RETRY_CODES = {"rate_limited", "unavailable", "server_error"}  # the outbox re-sends these


def tally(counter: dict, key: Any, n: int = 1) -> None:
    counter[key] = counter.get(key, 0) + n


class ClosedBeforeUpgrade(ConnectionError):
    """The server ended the connection before its upgrade response (picows then gives no listener)."""


def failure_kind(exc: BaseException, conn: Conn | None) -> str:
    """What a failed opening was, as a short name: `http_503`, `close_1013`, `refused`, `timeout`..."""
    if isinstance(exc, ClosedBeforeUpgrade):
        return "closed_before_101"
    if isinstance(exc, WSInvalidStatusError):
        return f"http_{int(exc.response.status)}"
    if conn is not None and conn.close_code is not None:
        return f"close_{conn.close_code}"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"  # nothing listens: a drained or stopped worker
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, ConnectionError) and conn is not None:
        return "closed_before_welcome"  # the connection ended without a close frame
    return f"{type(exc).__name__}: {exc}"[:100]


class Conn(WSListener):
    """One WebSocket connection of an agent."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.transport: WSTransport | None = None
        self.welcomed = asyncio.get_running_loop().create_future()
        # Read even when nobody waits any more (the opening timed out first): no "never retrieved".
        self.welcomed.add_done_callback(lambda f: f.cancelled() or f.exception())
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
        self.agent.on_open(self)

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
        self.attempt = 0  # the browser's `attempt`: the backoff exponent, 0 again at each welcome
        self.start_id: int | None = None
        self.last_id: int | None = None
        self.seen: set[int] = set()
        self.connections = 0
        self.duplicates = 0
        self.redelivered = 0
        self.out_of_order = 0
        self.pings = True  # the dead-link check (an endpoint that does not answer pings: False)
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
            self.attempt = 0
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
            tally(client.error_codes, code)
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
            tally(client.other_frames, kind)

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
        tally(client.server_closes, code)
        self.reconnect(self.next_delay(conn.close_code))

    def next_delay(self, code: int | None) -> float:
        """Seconds before the next attempt, as the browser's `nextDelay`: within RESTART_JITTER after
        1012, else full jitter under a cap that doubles with each attempt since the last welcome."""
        if code == RESTARTING:
            return random.uniform(0, RESTART_JITTER)
        cap = min(BACKOFF_MAX, BACKOFF_BASE * 2**self.attempt)
        self.attempt += 1
        return random.uniform(0, cap)

    def reconnect(self, delay: float) -> None:
        if not self.connecting and not self.client.stopping:
            self.client.spawn(self.connect(delay))

    def on_open(self, conn: Conn) -> None:
        """The socket opened (before any frame); endpoints with a `welcome` wait for it."""

    def new_conn(self) -> Conn:
        return Conn(self)

    def handshake_done(self, started_ns: int) -> None:
        """An attempt begun at `started_ns` got its welcome."""

    def handshake_failed(self, exc: BaseException, conn: Conn | None) -> None:
        """An attempt failed before its welcome (refused, closed, timed out)."""
        tally(self.client.connect_errors, failure_kind(exc, conn))

    async def connect(self, delay: float = 0.0) -> bool:
        """Connect until a welcome (or the end of the run); True once welcomed."""
        client = self.client
        self.connecting = True
        try:
            await asyncio.sleep(delay)
            while not client.stopping:
                conn = None
                async with client.gate:
                    started = now_ns()
                    try:
                        _, conn = await ws_connect(
                            self.new_conn,
                            self.urls[self.worker],
                            extra_headers=self.headers,
                            websocket_handshake_timeout=client.timeout,
                        )
                        if conn is None:
                            raise ClosedBeforeUpgrade("the connection ended before the upgrade response")
                        await asyncio.wait_for(asyncio.shield(conn.welcomed), client.timeout)
                    except Exception as exc:
                        self.handshake_failed(exc, conn)
                        if conn is not None and conn.transport is not None:
                            conn.dropped = True
                            conn.transport.disconnect()
                    else:
                        if self.conn is conn:
                            self.handshake_done(started)
                            return True
                        # It closed right after welcome: on_disconnected saw us still
                        # connecting and left the retry to this loop.
                # A 1012 before the welcome (a draining worker) is retried promptly, as the browser does.
                await asyncio.sleep(self.next_delay(conn.close_code if conn is not None else None))
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
