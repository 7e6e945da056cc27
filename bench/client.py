"""The load generator: picows sockets in a process of their own.

The parent drives it through a Pipe with small commands (connect, settle,
post, collect, close); each answer is a dict. Every frame is time-stamped on
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


def percentile(sorted_values, q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


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
                for attempt in range(3):  # a refused or broken handshake is retried twice
                    sock = None
                    try:
                        _transport, sock = await ws_connect(
                            lambda: Sock(rec), url, extra_headers=h, websocket_handshake_timeout=timeout
                        )
                        await asyncio.wait_for(sock.welcome, timeout)
                    except Exception as exc:
                        key = type(exc).__name__ + (f": {exc}"[:120] if str(exc) else "")
                        errors[key] = errors.get(key, 0) + 1
                        if sock is not None and sock.transport is not None:
                            sock.transport.disconnect()
                        await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    sock.index = i
                    sock.headers = h
                    self.socks.append(sock)
                    done_at.append(now_ns())
                    return

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
        rec.done = asyncio.get_running_loop().create_future()
        timed_out = stalled = False
        deadline = now_ns() + int(spec.get("timeout", 120) * 1e9)
        stall_ns = int(spec.get("stall", 15) * 1e9)
        start = now_ns()
        while rec.received < rec.expected and not rec.done.done():
            # Bounded twice: the overall timeout, and no delivery at all for `stall` seconds.
            await asyncio.wait([rec.done], timeout=0.25)
            t = now_ns()
            if t > deadline:
                timed_out = True
                break
            if t - max(rec.last_ns, start) > stall_ns:
                stalled = True
                break
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
        for sock in self.socks:
            with contextlib.suppress(Exception):
                sock.transport.send_close()
                sock.transport.disconnect()
        await asyncio.sleep(0.2)
        self.socks.clear()
        return {"closed": True}


async def serve(conn, client) -> None:
    """Answer the parent's commands until `close`; any client class with `dispatch` will do."""
    loop = asyncio.get_running_loop()
    while True:
        cmd, arg = await loop.run_in_executor(None, conn.recv)
        try:
            out = await client.dispatch(cmd, arg)
        except Exception as exc:
            out = {"error": f"{type(exc).__name__}: {exc}"}
        conn.send(out)
        if cmd == "close":
            return


def worker_main(conn, factory: str) -> None:
    import importlib

    from bench.common import raise_nofile

    raise_nofile()
    module, name = factory.split(":")
    client = getattr(importlib.import_module(module), name)()
    try:
        import uvloop

        uvloop.run(serve(conn, client))
    except ImportError:
        asyncio.run(serve(conn, client))


class ClientProcess:
    """A load-generator process, driven from the parent with blocking calls.

    `factory` ("module:Class") is the client class the process runs: this
    module's `Client` for the workloads, `bench.soak_client:SoakClient` for the soak.
    """

    def __init__(self, factory: str = "bench.client:Client") -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child, factory), daemon=True)
        self.proc.start()
        child.close()

    def send(self, cmd: str, arg: Any = None) -> None:
        self.conn.send((cmd, arg))

    def recv(self, timeout: float = 600) -> dict[str, Any]:
        if not self.conn.poll(timeout):
            raise TimeoutError("load generator did not answer")
        out = self.conn.recv()
        if isinstance(out, dict) and "error" in out:
            raise RuntimeError(f"load generator: {out['error']}")
        return out

    def call(self, cmd: str, arg: Any = None, timeout: float = 600) -> dict[str, Any]:
        self.send(cmd, arg)
        return self.recv(timeout)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(Exception):
                self.call("close", timeout=15)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


class Clients:
    """Several load-generator processes used as one; stops them all on exit."""

    def __init__(self, n: int, factory: str = "bench.client:Client") -> None:
        self.procs: list[ClientProcess] = []
        try:
            for _ in range(n):
                self.procs.append(ClientProcess(factory))
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def all(self, cmd: str, args: list[Any], timeout: float = 600) -> list[dict[str, Any]]:
        for proc, arg in zip(self.procs, args, strict=True):
            proc.send(cmd, arg)
        return [proc.recv(timeout) for proc in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
