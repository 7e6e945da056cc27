"""The workloads' load generator (`Client`: picows sockets in a process of their own), and what
every load generator (bench/*_client.py) shares: its clock, its CPU seconds, a socket opened
with retries, and the bounded wait for deliveries.

The parent drives it through a Pipe (bench/client_procs.py) with small commands (connect,
settle, post, collect, close); each answer is a dict. Every frame is time-stamped on
arrival with time.monotonic_ns() (CLOCK_MONOTONIC, shared by all processes),
and the latency of a delivery is that minus the send time embedded in it.

Modes (what a socket expects):
  chat       the service's /ws/chat/<slug>/: `welcome`, then `{"type":"message","message":{...}}`
  tutorial   baselines: `{"message": body}`
  notif      the service's /ws/notifications/: `welcome`, then `{"type":"notification",...}`
Bodies are "TAG:SEQ:T_NS"; notifications carry {"run": TAG, "t": T_NS} in `data`.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from picows import WSListener, WSMsgType, WSTransport, ws_connect

now_ns = time.monotonic_ns


class Recorder:
    def __init__(self, mode: str, tag: str) -> None:
        self.mode = mode
        self.tag = tag
        self.tag_prefix = tag + ":"
        self.lat = array("q")
        self.received = 0
        self.expected = -1
        self.done: asyncio.Future | None = None
        self.first_ns = 0
        self.last_ns = 0
        self.last_frame_ns = now_ns()
        self.frames = 0
        self.other = 0
        self.error_frames = 0
        self.error_samples: list[str] = []
        self.duplicates = 0
        self.out_of_order = 0
        self.unexpected_closes = 0
        self.lost_sockets = 0
        self.closing = False

    def delivered(self, t: int, at: int) -> None:
        self.lat.append(at - t)
        if not self.received:
            self.first_ns = at
        self.received += 1
        self.last_ns = at
        if self.received == self.expected and self.done is not None and not self.done.done():
            self.done.set_result(None)


class Sock(WSListener):
    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.transport: WSTransport | None = None
        self.welcome = asyncio.get_running_loop().create_future()
        self.next_seq = 0
        self.count = 0
        self.last_id = 0
        self.index = -1
        self.headers: list[tuple[str, str]] = []
        self.dead = False
        self.want = -1

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        if self.rec.mode == "tutorial" and not self.welcome.done():
            self.welcome.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        rec = self.rec
        if not rec.closing:
            self.dead = True
            rec.unexpected_closes += 1
            if self.want >= 0:
                # Collecting: what this socket will never get is no longer expected.
                rec.lost_sockets += 1
                rec.expected -= max(0, self.want - self.count)
                if rec.received >= rec.expected and rec.done is not None and not rec.done.done():
                    rec.done.set_result(None)
        if not self.welcome.done():
            self.welcome.set_exception(ConnectionError("closed before welcome"))

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        at = now_ns()
        rec = self.rec
        rec.last_frame_ns = at
        rec.frames += 1
        if frame.msg_type != WSMsgType.TEXT:
            return
        data = orjson.loads(frame.get_payload_as_bytes())
        mode = rec.mode
        if mode == "tutorial":
            body = data.get("message")
        else:
            kind = data.get("type")
            if kind == "message" and mode == "chat":
                body = data["message"]["body"]
            elif kind == "notification" and mode == "notif":
                note = data["notification"]
                extra = note.get("data") or {}
                if extra.get("run") != rec.tag:
                    rec.other += 1
                    return
                if note["id"] <= self.last_id:
                    rec.duplicates += 1
                    return
                self.last_id = note["id"]
                self.count += 1
                rec.delivered(extra["t"], at)
                return
            elif kind == "welcome":
                if mode == "notif":
                    self.last_id = data.get("last_id") or 0
                if not self.welcome.done():
                    self.welcome.set_result(None)
                return
            elif kind == "error":
                rec.error_frames += 1
                if len(rec.error_samples) < 5:
                    rec.error_samples.append(frame.get_payload_as_bytes().decode()[:300])
                return
            else:
                rec.other += 1
                return
        if not isinstance(body, str) or not body.startswith(rec.tag_prefix):
            rec.other += 1
            return
        _, seq, t = body.split(":")
        seq = int(seq)
        if seq < self.next_seq:
            rec.duplicates += 1
            return
        if seq > self.next_seq:
            rec.out_of_order += 1
        self.next_seq = seq + 1
        self.count += 1
        rec.delivered(int(t), at)


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def error_key(exc: BaseException) -> str:
    """A failure's kind and the start of its message: what errors are counted by."""
    return type(exc).__name__ + (f": {exc}"[:120] if str(exc) else "")


async def open_socket(
    make: Callable[[], Any],
    url: str,
    headers: list[tuple[str, str]],
    limit: float,
    ready: Callable[[Any], Awaitable],
    errors: dict[str, int],
) -> Any:
    """A socket whose listener `make()` built and `ready(listener)` declared ready within `limit`
    seconds, or None. A refused or broken handshake is retried twice; each failure is counted in `errors`."""
    for attempt in range(3):
        sock = None
        try:
            _transport, sock = await ws_connect(
                make, url, extra_headers=headers, websocket_handshake_timeout=limit
            )
            await asyncio.wait_for(ready(sock), limit)
        except Exception as exc:
            key = error_key(exc)
            errors[key] = errors.get(key, 0) + 1
            if sock is not None and sock.transport is not None:
                sock.transport.disconnect()
            await asyncio.sleep(0.2 * (attempt + 1))
            continue
        return sock
    return None


async def close_all(socks: list[Any]) -> None:
    """A close frame on every socket and its transport closed, then a moment for the frames to go out."""
    for sock in socks:
        with contextlib.suppress(Exception):
            sock.transport.send_close()
            sock.transport.disconnect()
    await asyncio.sleep(0.2)


async def wait_bounded(
    done: Callable[[], bool],
    last_ns: Callable[[], int],
    spec: dict[str, Any],
    pause: Callable[[], Awaitable],
) -> tuple[bool, bool]:
    """Wait until `done()`, bounded twice: `spec["timeout"]` seconds in all, and `spec["stall"]`
    seconds without a delivery (`last_ns()`, the latest one's time). `pause()` waits between looks.

    Returns (timed out, stalled)."""
    start = now_ns()
    deadline = start + int(spec.get("timeout", 120) * 1e9)
    stall = int(spec.get("stall", 15) * 1e9)
    while not done():
        t = now_ns()
        if t > deadline:
            return True, False
        if t - max(last_ns(), start) > stall:
            return False, True
        await pause()
    return False, False


class Client:
    def __init__(self) -> None:
        self.socks: list[Sock] = []
        self.rec: Recorder | None = None
        self.cpu_mark = 0.0
        self.wall_mark = 0

    async def connect(self, spec: dict[str, Any], rec: Recorder | None = None) -> dict[str, Any]:
        if rec is None:
            rec = Recorder(spec["mode"], spec["tag"])
        self.rec = rec
        self.url = url = spec["url"]
        headers = spec["headers"]
        gate = asyncio.Semaphore(spec.get("concurrency", 100))
        timeout = spec.get("timeout", 30.0)
        errors: dict[str, int] = {}
        done_at: list[int] = []

        async def one(i: int, h: list[tuple[str, str]]) -> None:
            async with gate:
                sock = await open_socket(lambda: Sock(rec), url, h, timeout, lambda s: s.welcome, errors)
                if sock is not None:
                    sock.index = i
                    sock.headers = h
                    self.socks.append(sock)
                    done_at.append(now_ns())

        start = now_ns()
        await asyncio.gather(*(one(i, [tuple(x) for x in h]) for i, h in enumerate(headers)))
        # The poster is the socket of the first headers: keep the headers' order.
        self.socks.sort(key=lambda s: s.index)
        end = max(done_at) if done_at else now_ns()
        return {
            "connected": len(done_at),  # by this call
            "errors": errors,
            "seconds": (end - start) / 1e9,
            "handshakes_per_s": len(done_at) / ((end - start) / 1e9) if end > start else 0.0,
        }

    async def heal(self, rounds: int = 3) -> dict[str, Any]:
        """Reopen sockets the server closed while the room was filling up."""
        healed = 0
        for _ in range(rounds):
            dead = [s for s in self.socks if s.dead]
            if not dead:
                break
            spec = {"url": self.url, "mode": self.rec.mode, "tag": self.rec.tag, "concurrency": 25}
            spec["headers"] = [s.headers for s in dead]
            keep = [s for s in self.socks if not s.dead]
            rec = self.rec
            self.socks = []
            answer = await self.connect(spec, rec=rec)
            for new in self.socks:  # connect numbered them within `dead`
                new.index = dead[new.index].index
            healed += answer["connected"]
            back = {s.index for s in self.socks}
            failed = [s for s in dead if s.index not in back]  # still dead; tried again next round
            self.socks = sorted(keep + self.socks + failed, key=lambda s: s.index)
            await asyncio.sleep(1.0)
        return {"healed": healed, "dead": sum(1 for s in self.socks if s.dead)}

    async def settle(self, quiet: float, limit: float) -> dict[str, Any]:
        """Wait until no frame has arrived for `quiet` seconds (presence storms end)."""
        start = now_ns()
        while (now_ns() - start) / 1e9 < limit:
            if (now_ns() - self.rec.last_frame_ns) / 1e9 >= quiet:
                break
            await asyncio.sleep(0.05)
        return {"waited_s": (now_ns() - start) / 1e9, "frames": self.rec.frames}

    def mark(self) -> dict[str, Any]:
        self.cpu_mark = cpu_seconds()
        self.wall_mark = now_ns()
        return {"t": self.wall_mark}

    def post(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Socket 0 sends `count` messages back to back (as fast as the socket allows)."""
        rec = self.rec
        transport = self.socks[0].transport
        chat = spec["format"] == "chat"
        self.mark()
        t_first = now_ns()
        for seq in range(spec["count"]):
            body = f"{rec.tag}:{seq}:{now_ns()}"
            if chat:
                payload = {"type": "message", "body": body, "client_id": f"{rec.tag}-{seq}"}
            else:
                payload = {"message": body}
            transport.send(WSMsgType.TEXT, orjson.dumps(payload))
        return {"t_first_send": t_first, "t_last_send": now_ns()}

    async def collect(self, spec: dict[str, Any]) -> dict[str, Any]:
        rec = self.rec
        per_socket = spec.get("per_socket")  # list of expected counts, or None
        each = spec.get("expected_each")
        live = [s for s in self.socks if not s.dead]
        for s in live:
            s.want = per_socket[s.index] if per_socket is not None else (each if each is not None else 0)
        if per_socket is not None or each is not None:
            rec.expected = sum(s.want for s in live)
        else:
            rec.expected = spec["expected"]
        rec.done = done = asyncio.get_running_loop().create_future()
        timed_out, stalled = await wait_bounded(
            lambda: rec.received >= rec.expected or done.done(),
            lambda: rec.last_ns,
            spec,
            lambda: asyncio.wait([done], timeout=0.25),
        )
        await asyncio.sleep(spec.get("linger", 0.2))  # late duplicates would show here
        cpu = cpu_seconds() - self.cpu_mark
        wall = (now_ns() - self.wall_mark) / 1e9
        short_sockets = sum(1 for s in live if s.want >= 0 and s.count != s.want and not s.dead)
        return {
            "sockets_at_start": len(live),
            "dead_before_start": len(self.socks) - len(live),
            "lost_sockets": rec.lost_sockets,
            "received": rec.received,
            "expected": rec.expected,
            "timed_out": timed_out,
            "stalled": stalled,
            "first_ns": rec.first_ns,
            "last_ns": rec.last_ns,
            "lat": rec.lat.tobytes(),
            "duplicates": rec.duplicates,
            "out_of_order": rec.out_of_order,
            "short_sockets": short_sockets,
            "error_frames": rec.error_frames,
            "error_samples": rec.error_samples,
            "other_frames": rec.other,
            "unexpected_closes": rec.unexpected_closes,
            "client_cpu_s": cpu,
            "client_wall_s": wall,
        }

    async def dispatch(self, cmd: str, arg: Any) -> dict[str, Any]:
        if cmd == "connect":
            return await self.connect(arg)
        if cmd == "heal":
            return await self.heal()
        if cmd == "settle":
            return await self.settle(*arg)
        if cmd == "mark":
            return self.mark()
        if cmd == "post":
            return self.post(arg)
        if cmd == "collect":
            return await self.collect(arg)
        if cmd == "close":
            return await self.close()
        return {"error": f"unknown command {cmd}"}

    async def close(self) -> dict[str, Any]:
        if self.rec is not None:
            self.rec.closing = True
        await close_all(self.socks)
        self.socks.clear()
