"""The load generator of the `ticker` workload: subscribers of live topics.

Runs in `bench.client_procs` processes (`Clients(n, factory="bench.ticker_client:TickerClient")`).
Each subscriber opens one socket (the service's `/ws/live/`, or a baseline that
speaks the same frames), subscribes to its topics in one frame and waits for a
`subscribed` frame per topic. Values carry `{"t": T_NS}`, the publisher's
time.monotonic_ns(); a delivery's latency is its receipt minus that.

Every update is checked against the topic's previous `seq` on that socket: a
lower or equal one is out of order or a duplicate, a gap is values skipped
(conflation, on the service). Slow subscribers stop reading (their transport's
`pause_reading`) on `pause` and read again on `resume`; their deliveries are kept
apart: the age of the first value after resuming, and how long until a value
younger than FRESH_MS arrives.

Commands: connect, mark, pause, resume, collect, close.
"""

from __future__ import annotations

import asyncio
import random
from array import array
from typing import Any

import orjson
from picows import WSListener, WSMsgType, WSTransport

from bench.client import close_all, cpu_seconds, now_ns, open_socket

TOPIC_PREFIX = "ticker."
FRESH_MS = 100  # a value younger than this counts as caught up after a pause


def topic_name(j: int) -> str:
    return f"{TOPIC_PREFIX}t{j:04d}"


def ticker_group(topic: str) -> str:
    """The plain Channels baseline's group of a topic."""
    return f"ticker_{topic}"


def topics_of(index: int, n_topics: int, follow: int) -> list[str]:
    """The topics subscriber `index` follows: the same for every target and every run."""
    return [topic_name(j) for j in sorted(random.Random(index).sample(range(n_topics), follow))]


def publishes_per_topic(total: int, n_topics: int) -> list[int]:
    """How many values each topic gets when publish k goes to topic k % n_topics."""
    return [total // n_topics + (1 if j < total % n_topics else 0) for j in range(n_topics)]


class Subscriber(WSListener):
    def __init__(self, client: TickerClient, index: int, topics: list[str]) -> None:
        self.client = client
        self.index = index
        self.topics = topics
        self.transport: WSTransport | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.waiting = set(topics)
        self.seq: dict[str, int] = {}
        self.slow = False
        self.resumed_ns = 0
        self.first_age_ns = -1
        self.fresh_after_ns = -1
        self.received = 0
        self.dead = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        transport.send(WSMsgType.TEXT, orjson.dumps({"type": "subscribe", "topics": self.topics}))

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.client.closing:
            self.dead = True
            self.client.unexpected_closes += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before subscribed"))

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        at = now_ns()
        client = self.client
        client.last_frame_ns = at
        if frame.msg_type != WSMsgType.TEXT:
            return
        data = orjson.loads(frame.get_payload_as_bytes())
        kind = data.get("type")
        if kind == "update":
            self._update(data, at)
        elif kind == "subscribed":
            self.seq[data["topic"]] = data.get("seq") or 0
            self.waiting.discard(data["topic"])
            if not self.waiting and not self.ready.done():
                self.ready.set_result(None)
        elif kind == "error":
            client.error_frames += 1
            if len(client.error_samples) < 5:
                client.error_samples.append(frame.get_payload_as_bytes().decode()[:300])

    def _update(self, data: dict[str, Any], at: int) -> None:
        client = self.client
        topic, seq = data["topic"], data["seq"]
        last = self.seq.get(topic, 0)
        if seq <= last:
            client.duplicates += seq == last
            client.out_of_order += seq < last
            return
        client.skipped += seq - last - 1
        self.seq[topic] = seq
        age = at - data["data"]["t"]
        if not self.slow:
            client.lat.append(age)
            client.received += 1
            client.last_ns = at
            return
        self.received += 1
        if self.resumed_ns and at >= self.resumed_ns:
            if self.first_age_ns < 0:
                self.first_age_ns = age
            if self.fresh_after_ns < 0 and age < FRESH_MS * 1_000_000:
                self.fresh_after_ns = at - self.resumed_ns


class TickerClient:
    def __init__(self) -> None:
        self.subs: list[Subscriber] = []
        self.closing = False
        self.reset()

    def reset(self) -> None:
        self.lat = array("q")
        self.received = 0
        self.skipped = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.error_frames = 0
        self.error_samples: list[str] = []
        self.unexpected_closes = 0
        self.last_frame_ns = now_ns()
        self.last_ns = 0
        self.cpu_mark = cpu_seconds()
        self.wall_mark = now_ns()

    async def connect(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Open a socket per index of `spec["indices"]`; each subscribes to its topics."""
        gate = asyncio.Semaphore(spec.get("concurrency", 25))
        timeout = spec.get("timeout", 60.0)
        errors: dict[str, int] = {}

        async def one(index: int, headers: list) -> None:
            topics = topics_of(index, spec["topics"], spec["follow"])
            async with gate:
                sub = await open_socket(
                    lambda: Subscriber(self, index, topics),
                    spec["url"],
                    [tuple(h) for h in headers],
                    timeout,
                    lambda s: s.ready,
                    errors,
                )
                if sub is not None:
                    self.subs.append(sub)

        start = now_ns()
        await asyncio.gather(*(one(i, h) for i, h in zip(spec["indices"], spec["headers"], strict=True)))
        self.subs.sort(key=lambda s: s.index)
        return {"connected": len(self.subs), "errors": errors, "seconds": (now_ns() - start) / 1e9}

    def pause(self, indices: list[int]) -> dict[str, Any]:
        """These subscribers stop reading: the server's writes to them back up."""
        paused = [sub for sub in self.subs if sub.index in indices]
        for sub in paused:
            sub.transport.underlying_transport.pause_reading()
        return {"paused": len(paused), "t": now_ns()}

    def resume(self) -> dict[str, Any]:
        t = now_ns()
        for sub in self.subs:
            if sub.slow:
                sub.resumed_ns = t
                sub.transport.underlying_transport.resume_reading()
        return {"t": t}

    async def collect(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Wait until every socket has each topic's last value (or nothing arrived for `quiet` s)."""
        counts = spec["counts"]
        quiet_ns = int(spec.get("quiet", 2.0) * 1e9)
        deadline = now_ns() + int(spec.get("timeout", 120) * 1e9)

        def behind() -> int:
            return sum(
                1
                for s in self.subs
                if not s.dead
                for t in s.topics
                if s.seq.get(t, 0) < counts[int(t[len(TOPIC_PREFIX) + 1 :])]
            )

        # Polled: three ways to stop (caught up, the deadline, or no frame for `quiet` seconds).
        while behind() and now_ns() < deadline and now_ns() - self.last_frame_ns < quiet_ns:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        expected = sum(
            counts[int(t[len(TOPIC_PREFIX) + 1 :])] for s in self.subs if not s.slow for t in s.topics
        )
        slow = [s for s in self.subs if s.slow]
        return {
            "sockets": len(self.subs),
            "received": self.received,
            "expected": expected,
            "lat": self.lat.tobytes(),
            "last_ns": self.last_ns,
            "conflated": self.skipped,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "behind": behind(),
            "lost_sockets": sum(1 for s in self.subs if s.dead),
            "error_frames": self.error_frames,
            "error_samples": self.error_samples,
            "unexpected_closes": self.unexpected_closes,
            "slow_received": [s.received for s in slow],
            "slow_first_age_ns": [s.first_age_ns for s in slow],
            "slow_fresh_after_ns": [s.fresh_after_ns for s in slow],
            "client_cpu_s": cpu_seconds() - self.cpu_mark,
            "client_wall_s": (now_ns() - self.wall_mark) / 1e9,
        }

    async def dispatch(self, cmd: str, arg: Any) -> dict[str, Any]:
        if cmd == "connect":
            return await self.connect(arg)
        if cmd == "mark":  # the measurement starts; `arg`: the slow subscribers' indices
            self.reset()
            for sub in self.subs:
                sub.slow = sub.index in arg
            return {"t": self.wall_mark}
        if cmd == "pause":
            return self.pause(arg)
        if cmd == "resume":
            return self.resume()
        if cmd == "collect":
            return await self.collect(arg)
        if cmd == "close":
            return await self.close()
        return {"error": f"unknown command {cmd}"}

    async def close(self) -> dict[str, Any]:
        self.closing = True
        await close_all(self.subs)
        self.subs.clear()
        return {"closed": True}
