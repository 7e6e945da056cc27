"""The load generator of the `joins` workload and of the fan-out run without quiet.

Runs in `bench.client` processes (`Clients(n, factory="bench.joins_client:JoinsClient")`).
Members join one room on a schedule (a steady rate, or as fast as `concurrency`
handshakes in flight allow) while one member, the poster, posts: at a steady rate
for as long as the parent lets it, or a burst once some members are in.

What each member receives is what a user would see, so it is all counted:
- every frame and its bytes on the wire (payload plus the 2-10 byte header of an
  unmasked server frame), by kind: welcome, presence, message, other;
- the ids of the `message` frames, in arrival order (the tutorial baseline has no
  ids: the poster's sequence number stands in), so the parent can check exactly
  once against the database: every id above the welcome's `last_id`;
- the delivery latency of each post (receipt minus the send time in its body);
- the online list as the room page keeps it: the welcome's `online` and
  `online_count`, then each `presence` frame's `joined`, `left` and count; names
  are bench usernames (`bench-NNNNN`), kept as one bit per user index.

Commands: begin, poster, storm, stop_posting, burst, quiet, echoes, verify, online, hangup
(every socket closes), close (and the process ends).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import resource
from array import array
from collections.abc import Callable
from typing import Any

import orjson
from picows import WSListener, WSMsgType, WSTransport, ws_connect

from bench.client import now_ns

KINDS = ("welcome", "presence", "message", "other")
BENCH_USER = "bench-"
_CACHE_MAX = 64  # parsed frames kept: a frame reaches every member of a worker with the same bytes


def wire_size(payload: int) -> int:
    """Bytes of a server frame on the wire: unmasked, so a 2, 4 or 10 byte header (RFC 6455 5.2)."""
    return payload + (2 if payload < 126 else 4 if payload < 65536 else 10)


def user_index(name: str) -> int:
    """The bench user's number, or -1 for a name that is not a bench user's."""
    if name.startswith(BENCH_USER) and name[len(BENCH_USER) :].isdigit():
        return int(name[len(BENCH_USER) :])
    return -1


class Member(WSListener):
    """One member's socket."""

    def __init__(self, client: JoinsClient, index: int, headers: list[tuple[str, str]]) -> None:
        self.client = client
        self.index = index
        self.headers = headers
        self.transport: WSTransport | None = None
        self.welcomed = asyncio.get_running_loop().create_future()
        self.t_start = 0  # handshake begun
        self.t_open = 0  # 101 received (the baseline's "in the room")
        self.t_welcome = 0
        self.last_id = 0  # the welcome's: ids above it must arrive live, once each
        self.ids = array("q")  # message ids (or the baseline's sequence numbers), as they arrived
        self.known = bytearray(client.nbits // 8 + 1)  # online users as this member knows them
        self.welcome_complete = False  # the welcome named everyone online
        self.count = -1  # the latest online_count
        self.truncated = 0
        self.dead = False  # closed by the server (or the network) after joining
        self.close_code: int | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.t_open = now_ns()
        if self.client.mode == "tutorial" and not self.welcomed.done():
            self.t_welcome = self.t_open
            self.welcomed.set_result(None)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.client.closing and self.welcomed.done():
            self.dead = True
            self.client.dropped += 1
        if not self.welcomed.done():
            self.welcomed.set_exception(ConnectionError(f"closed before welcome ({self.close_code or 1006})"))

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        at = now_ns()
        client = self.client
        size = wire_size(frame.payload_size)
        if frame.msg_type != WSMsgType.TEXT:
            if frame.msg_type == WSMsgType.CLOSE:
                self.close_code = int(frame.get_close_code())
            client.tally("other", size)
            return
        item = client.parse(frame.get_payload_as_bytes())
        kind = item[0]
        client.tally(kind, size)
        if kind == "message":
            _, ident, sent = item
            self.ids.append(ident)
            client.last_message_ns = at
            if sent:
                client.lat.append(at - sent)
            if self is client.poster:
                client.echoed += 1
                client.echo_ns.append(at)
                client.echo_lat.append(at - sent)
        elif kind == "presence":
            _, joined, left, count, truncated = item
            known = self.known
            for i in joined:
                known[i >> 3] |= 1 << (i & 7)
            for i in left:
                known[i >> 3] &= ~(1 << (i & 7)) & 0xFF
            self.count = count
            self.truncated += truncated
            client.last_presence_ns = at
        elif kind == "welcome":
            _, last_id, online, count = item
            self.t_welcome = at
            self.last_id = last_id
            for i in online:
                self.known[i >> 3] |= 1 << (i & 7)
            self.count = count
            self.welcome_complete = len(online) >= count
            if not self.welcomed.done():
                self.welcomed.set_result(None)


class JoinsClient:
    def __init__(self) -> None:
        self.mode = "chat"
        self.tag = ""
        self.nbits = 0
        self.members: list[Member] = []
        self.poster: Member | None = None
        self.closing = False
        self._cache: dict[bytes, tuple] = {}
        self.reset({"mode": "chat", "tag": "", "nbits": 0})

    def reset(self, spec: dict[str, Any]) -> None:
        self.mode = spec["mode"]  # "chat" (the service) or "tutorial" (the baselines)
        self.tag = spec["tag"]
        self.tag_prefix = self.tag + ":"
        self.nbits = spec["nbits"]
        self.members = []
        self.poster = None
        self.closing = False
        self._cache.clear()
        self.frames = dict.fromkeys(KINDS, 0)
        self.bytes = dict.fromkeys(KINDS, 0)
        self.foreign_names = 0
        self.lat = array("q")
        self.dropped = 0
        self.echoed = 0
        self.echo_ns = array("q")  # when the poster got each of its posts back
        self.echo_lat = array("q")  # and how long after it sent it
        self.last_presence_ns = 0
        self.last_message_ns = 0
        self.last_frame_ns = 0
        self.sends = array("q")  # the poster's send time of each sequence number
        self.t_first_send = 0
        self._posting: asyncio.Task | None = None
        self._stop_posting = asyncio.Event()
        self.cpu_mark = _cpu_seconds()

    # --- frames ---------------------------------------------------------------------------------
    def tally(self, kind: str, size: int) -> None:
        self.frames[kind] += 1
        self.bytes[kind] += size
        self.last_frame_ns = now_ns()

    def parse(self, payload: bytes) -> tuple:
        """(kind, ...) for a text frame; the same bytes are parsed once (one frame, many members)."""
        item = self._cache.get(payload)
        if item is not None:
            return item
        data = orjson.loads(payload)
        if self.mode == "tutorial":
            seq, sent = self._ours(data.get("message"))
            item = ("message", seq, sent) if seq >= 0 else ("other",)
        else:
            kind = data.get("type")
            if kind == "message":
                ident, sent = self._ours(data["message"].get("body"))
                # The service's id is the one to check; the body's sequence only times it.
                item = ("message", int(data["message"]["id"]), sent) if ident >= 0 else ("other",)
            elif kind == "presence":
                item = (
                    "presence",
                    self._indices(data.get("joined") or []),
                    self._indices(data.get("left") or []),
                    int(data["online_count"]),
                    1 if data.get("truncated") else 0,
                )
            elif kind == "welcome":
                # Never cached: each welcome names its own user.
                online = self._indices(data["online"])
                return ("welcome", int(data.get("last_id") or 0), online, int(data["online_count"]))
            else:
                item = ("other",)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[payload] = item
        return item

    def _ours(self, body: Any) -> tuple[int, int]:
        """(sequence, send time) of one of this run's posts, else (-1, 0)."""
        if not isinstance(body, str) or not body.startswith(self.tag_prefix):
            return -1, 0
        _, seq, sent = body.split(":")
        return int(seq), int(sent)

    def _indices(self, names: list[str]) -> list[int]:
        out = []
        for name in names:
            i = user_index(name)
            if 0 <= i < self.nbits:
                out.append(i)
            else:
                self.foreign_names += 1
        return out

    # --- joining --------------------------------------------------------------------------------
    async def _join(self, member: Member, url: str, limit: float, errors: dict[str, int]) -> bool:
        member.t_start = now_ns()
        try:
            await ws_connect(
                lambda: member, url, extra_headers=member.headers, websocket_handshake_timeout=limit
            )
            await asyncio.wait_for(member.welcomed, limit)
        except Exception as exc:
            key = type(exc).__name__ + (f": {exc}"[:120] if str(exc) else "")
            errors[key] = errors.get(key, 0) + 1
            if member.transport is not None:
                member.transport.disconnect()
            return False
        self.members.append(member)
        return True

    async def poster_join(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The poster joins first, before the storm; it is a member too."""
        errors: dict[str, int] = {}
        member = Member(self, spec["index"], [tuple(h) for h in spec["headers"]])
        if not await self._join(member, spec["url"], spec.get("timeout", 30.0), errors):
            raise RuntimeError(f"the poster could not join: {errors}")
        self.poster = member
        return {"last_id": member.last_id, "t_welcome": member.t_welcome}

    async def storm(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Members join: join k is due at t0 + k / rate (or as soon as a slot is free without a rate).

        spec: joins [[k, index, url, headers]], t0, rate or None, concurrency, timeout,
        post: None, {"rate": per second} (until stop_posting) or {"count": m, "after": welcomes}.
        """
        rate = spec.get("rate")
        t0 = spec["t0"]
        gate = asyncio.Semaphore(spec.get("concurrency", 25))
        timeout = spec.get("timeout", 30.0)
        errors: dict[str, int] = {}
        lags: list[int] = []
        handshakes: list[int] = []
        post = spec.get("post")
        welcomed = 0
        burst_at = post.get("after") if post and "count" in post else None
        burst_sent = asyncio.Event()
        if post and "rate" in post:
            self._stop_posting.clear()
            self._posting = asyncio.ensure_future(self._paced_posts(post["rate"], t0))
        if burst_at is not None and burst_at <= 0:
            self._burst(post["count"])
            burst_sent.set()

        until = spec.get("until")  # no join begins after this (a server far behind the schedule)
        skipped = 0

        async def one(k: int, index: int, url: str, headers: list) -> None:
            nonlocal welcomed, skipped
            member = Member(self, index, [tuple(h) for h in headers])
            async with gate:
                if until is not None and now_ns() > until:
                    skipped += 1
                    return
                due = t0 + (int(k * 1e9 / rate) if rate else 0)
                lags.append(max(0, now_ns() - due))
                if await self._join(member, url, timeout, errors):
                    handshakes.append(member.t_welcome - member.t_start)
                    welcomed += 1
                    if burst_at is not None and welcomed >= burst_at and not burst_sent.is_set():
                        self._burst(post["count"])
                        burst_sent.set()

        async def paced() -> None:
            tasks = []
            for k, index, url, headers in spec["joins"]:
                if rate:
                    wait = t0 + int(k * 1e9 / rate) - now_ns()
                    if wait > 0:
                        await asyncio.sleep(wait / 1e9)
                tasks.append(asyncio.ensure_future(one(k, index, url, headers)))
            await asyncio.gather(*tasks)

        if now_ns() < t0:
            await asyncio.sleep((t0 - now_ns()) / 1e9)
        start = now_ns()
        await paced()
        if burst_at is not None and not burst_sent.is_set():
            self._burst(post["count"])  # fewer members than `after` got in
        joined = [m for m in self.members if m is not self.poster]
        return {
            "joined": welcomed,
            "failed": len(spec["joins"]) - welcomed - skipped,
            "not_attempted": skipped,
            "errors": errors,
            "t_start": start,
            "t_last_welcome": max((m.t_welcome for m in joined), default=0),
            "welcomes": array("q", [m.t_welcome for m in joined]).tobytes(),
            "lags": array("q", lags).tobytes(),
            "handshakes": array("q", handshakes).tobytes(),
        }

    # --- posting --------------------------------------------------------------------------------
    def _send(self, seq: int) -> None:
        t = now_ns()
        if not self.t_first_send:
            self.t_first_send = t
        self.sends.append(t)
        body = f"{self.tag}:{seq}:{t}"
        if self.mode == "chat":
            payload = {"type": "message", "body": body, "client_id": f"{self.tag}-{seq}"}
        else:
            payload = {"message": body}
        self.poster.transport.send(WSMsgType.TEXT, orjson.dumps(payload))

    def _burst(self, count: int) -> None:
        for _ in range(count):
            self._send(len(self.sends))

    async def _paced_posts(self, rate: float, t0: int) -> None:
        seq = 0
        while not self._stop_posting.is_set():
            wait = t0 + int(seq * 1e9 / rate) - now_ns()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_posting.wait(), wait / 1e9)
                if self._stop_posting.is_set():
                    break
            self._send(len(self.sends))
            seq += 1

    async def stop_posting(self) -> dict[str, Any]:
        self._stop_posting.set()
        if self._posting is not None:
            await self._posting
            self._posting = None
        return self.posted()

    def burst(self, spec: dict[str, Any]) -> dict[str, Any]:
        self._burst(spec["count"])
        return self.posted()

    def posted(self) -> dict[str, Any]:
        return {"sent": len(self.sends), "t_first_send": self.t_first_send, "sends": self.sends.tobytes()}

    # --- waiting --------------------------------------------------------------------------------
    async def quiet(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Wait until no presence frame has arrived for `quiet` seconds (bounded by `limit`)."""
        start = now_ns()
        quiet = int(spec["quiet"] * 1e9)
        limit = int(spec["limit"] * 1e9)
        while now_ns() - start < limit:
            if now_ns() - max(self.last_presence_ns, start) >= quiet:
                break
            await asyncio.sleep(0.05)
        return {"last_presence_ns": self.last_presence_ns, "waited_s": (now_ns() - start) / 1e9}

    async def echoes(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Wait until the poster got each of its posts back (they are stored by then).

        Bounded by `timeout`, and by `stall` seconds without one coming back.
        """
        start = now_ns()
        deadline = start + int(spec["timeout"] * 1e9)
        stall = int(spec.get("stall", 15) * 1e9)
        while self.echoed < len(self.sends):
            t = now_ns()
            if t > deadline or t - max(self.echo_ns[-1] if self.echo_ns else 0, start) > stall:
                break
            await asyncio.sleep(0.05)
        return {
            "echoed": self.echoed,
            "sent": len(self.sends),
            "waited_s": (now_ns() - start) / 1e9,
            "echo_ns": self.echo_ns.tobytes(),
            "echo_lat": self.echo_lat.tobytes(),
        }

    async def _wait_for(self, have: Callable[[], int], want: int, spec: dict[str, Any]) -> tuple[bool, bool]:
        """Poll `have()` until it reaches `want`, the timeout passes or nothing arrives for `stall` s.

        Returns (timed out, stalled)."""
        start = now_ns()
        deadline = start + int(spec.get("timeout", 120) * 1e9)
        stall = int(spec.get("stall", 15) * 1e9)
        timed_out = stalled = False
        while have() < want:
            t = now_ns()
            if t > deadline:
                timed_out = True
                break
            if t - max(self.last_message_ns, start) > stall:
                stalled = True
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(spec.get("linger", 0.3))  # late duplicates would show here
        return timed_out, stalled

    def _tally(
        self, ours: list[int], first: dict[int, int], service: bool
    ) -> tuple[dict[str, int], int, int, list[str]]:
        """Each member's ids against the suffix of `ours` it must get: the totals, early and late
        deliveries, and a few members that fell short."""
        ours_set = set(ours)
        totals = dict.fromkeys(
            ("expected", "received", "lost", "duplicates", "unexpected", "out_of_order", "short_members"), 0
        )
        early = late = 0
        top = ours[-1] if ours else 0
        samples: list[str] = []
        for m in self.members:
            exp = set(ours[first[id(m)] :])
            got = set(m.ids)
            missing = len(exp - got)
            dup = len(m.ids) - len(got)
            # The service: a live id at or below the welcome's last_id was in its history already;
            # one above every id read is a post stored after the read (counted by the parent).
            stray = got - exp
            late_ids = {i for i in stray if service and i > top}
            late += len(late_ids)
            stray -= late_ids
            unexpected = len(stray) if service else len(stray - ours_set)
            early += 0 if service else len(stray & ours_set)
            disorder = sum(1 for a, b in zip(m.ids, m.ids[1:], strict=False) if b <= a)
            totals["expected"] += len(exp)
            totals["received"] += len(got & exp)
            totals["lost"] += missing
            totals["duplicates"] += dup
            totals["unexpected"] += unexpected
            totals["out_of_order"] += disorder
            if missing or dup or unexpected:
                totals["short_members"] += 1
                if len(samples) < 5:
                    closed = f" (closed {m.close_code or 1006})" if m.dead else ""
                    samples.append(
                        f"member {m.index}: {missing} missing, {dup} duplicates, "
                        f"{unexpected} unexpected{closed}"
                    )
        return totals, early, late, samples

    # --- checks ---------------------------------------------------------------------------------
    async def verify(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Wait for the expected deliveries (bounded), then check each member's ids exactly.

        What a member must get is a suffix of the posts. The service: every id above
        its welcome's `last_id` (`ids`, the room's ids from the database). The baseline
        has no ids: every post sent after its socket was accepted (the consumer joins
        the group before it accepts); one sent before may or may not arrive (`early`).
        """
        ids = spec.get("ids")
        sends = array("q")
        sends.frombytes(spec.get("sends") or b"")
        service = ids is not None
        ours = sorted(ids) if service else list(range(len(sends)))
        ours_set = set(ours)
        # Per member: the first of `ours` it must get (an index into `ours`).
        first = {
            id(m): bisect.bisect_right(ours, m.last_id) if service else bisect.bisect_right(sends, m.t_open)
            for m in self.members
        }
        floor = {id(m): ours[first[id(m)]] if first[id(m)] < len(ours) else None for m in self.members}
        want = sum(len(ours) - first[id(m)] for m in self.members if not m.dead)
        scanned = dict.fromkeys(floor, 0)
        hits = dict.fromkeys(floor, 0)

        def have() -> int:
            total = 0
            for m in self.members:
                key, low = id(m), floor[id(m)]
                if low is not None:
                    for x in m.ids[scanned[key] :]:
                        if x >= low and x in ours_set:
                            hits[key] += 1
                    scanned[key] = len(m.ids)
                if not m.dead:
                    total += hits[key]
            return total

        timed_out, stalled = await self._wait_for(have, want, spec)
        totals, early, late, samples = self._tally(ours, first, service)
        return {
            **totals,
            "early": early,
            "late": late,
            "members": len(self.members),
            "dropped": sum(1 for m in self.members if m.dead),
            "timed_out": timed_out,
            "stalled": stalled,
            "samples": samples,
            "lat": self.lat.tobytes(),
            "last_message_ns": self.last_message_ns,
            "last_presence_ns": self.last_presence_ns,
            "frames": self.frames,
            "bytes": self.bytes,
            "foreign_names": self.foreign_names,
            "client_cpu_s": round(_cpu_seconds() - self.cpu_mark, 3),
        }

    async def online(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Each member's view of who is online, for the parent to compare with the truth.

        First wait (bounded) until no frame at all has arrived for `quiet` seconds: a
        presence frame may still sit behind a backlog of posts in a socket's buffer.
        """
        start = now_ns()
        while now_ns() - start < spec["limit"] * 1e9:
            if now_ns() - max(self.last_frame_ns, start) >= spec["quiet"] * 1e9:
                break
            await asyncio.sleep(0.05)
        return {
            "settled": now_ns() - max(self.last_frame_ns, start) >= spec["quiet"] * 1e9,
            "members": [
                {
                    "index": m.index,
                    "t_start": m.t_start,
                    "t_welcome": m.t_welcome,
                    "dead": m.dead,
                    "count": m.count,
                    "truncated": m.truncated,
                    "welcome_complete": m.welcome_complete,
                    "known": bytes(m.known),
                }
                for m in self.members
            ],
        }

    # --- the pipe -------------------------------------------------------------------------------
    async def dispatch(self, cmd: str, arg: Any) -> dict[str, Any]:
        if cmd == "begin":
            await self.close()
            self.reset(arg)
            return {"ok": True}
        if cmd == "poster":
            return await self.poster_join(arg)
        if cmd == "storm":
            return await self.storm(arg)
        if cmd == "stop_posting":
            return await self.stop_posting()
        if cmd == "burst":
            return self.burst(arg)
        if cmd == "quiet":
            return await self.quiet(arg)
        if cmd == "echoes":
            return await self.echoes(arg)
        if cmd == "verify":
            return await self.verify(arg)
        if cmd == "online":
            return await self.online(arg)
        if cmd in ("hangup", "close"):  # `close` also ends the process (bench.client.serve)
            return await self.close()
        return {"error": f"unknown command {cmd}"}

    async def close(self) -> dict[str, Any]:
        self.closing = True
        if self._posting is not None:
            self._stop_posting.set()
            self._posting.cancel()
            self._posting = None
        for member in self.members:
            with contextlib.suppress(Exception):
                member.transport.send_close()
                member.transport.disconnect()
        closed = len(self.members)
        await asyncio.sleep(0.2)
        self.members = []
        return {"closed": closed}


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime
