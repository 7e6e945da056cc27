"""The load generator of the `joins` workload and of the fan-out run without quiet.

Runs in `bench.client_procs` processes (`Clients(n, factory="bench.joins_client:JoinsClient")`).
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
A member's socket and the parsing of its frames are bench/joins_member.py; the check of
each member's ids against the posts it must have is bench/joins_verify.py.

Commands: begin, poster, storm, stop_posting, burst, quiet, echoes, verify, online, hangup
(every socket closes), close (and the process ends).
"""

from __future__ import annotations

import asyncio
import contextlib
from array import array
from typing import Any

import orjson
from picows import WSMsgType, ws_connect

from bench.client import close_all, cpu_seconds, error_key, now_ns, wait_bounded
from bench.joins_member import Inbox, Member
from bench.joins_verify import Expected


class JoinsClient:
    def __init__(self) -> None:
        self.mode = "chat"
        self.tag = ""
        self.nbits = 0
        self.members: list[Member] = []
        self.poster: Member | None = None
        self.closing = False
        self.reset({"mode": "chat", "tag": "", "nbits": 0})

    def reset(self, spec: dict[str, Any]) -> None:
        self.mode = spec["mode"]  # "chat" (the service) or "tutorial" (the baselines)
        self.tag = spec["tag"]
        self.nbits = spec["nbits"]
        self.inbox = Inbox(self.mode, self.tag, self.nbits)
        self.members = []
        self.poster = None
        self.closing = False
        self.lat = array("q")
        self.dropped = 0
        self.echoed = 0
        self.echo_ns = array("q")  # when the poster got each of its posts back
        self.echo_lat = array("q")  # and how long after it sent it
        self.last_presence_ns = 0
        self.last_message_ns = 0
        self.sends = array("q")  # the poster's send time of each sequence number
        self.t_first_send = 0
        self._posting: asyncio.Task | None = None
        self._stop_posting = asyncio.Event()
        self.cpu_mark = cpu_seconds()

    # --- joining --------------------------------------------------------------------------------
    async def _join(self, member: Member, url: str, limit: float, errors: dict[str, int]) -> bool:
        member.t_start = now_ns()
        try:
            await ws_connect(
                lambda: member, url, extra_headers=member.headers, websocket_handshake_timeout=limit
            )
            await asyncio.wait_for(member.welcomed, limit)
        except Exception as exc:
            key = error_key(exc)
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

    # --- checks ---------------------------------------------------------------------------------
    async def verify(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Wait for the expected deliveries (bounded), then check each member's ids exactly.

        What a member must get is a suffix of the posts. The service: every id above
        its welcome's `last_id` (`ids`, the room's ids from the database). The baseline
        has no ids: every post sent after its socket was accepted (the consumer joins
        the group before it accepts); one sent before may or may not arrive (`early`).
        """
        expected = Expected(self.members, spec.get("ids"), spec.get("sends"))
        timed_out, stalled = await wait_bounded(
            lambda: expected.have() >= expected.want,
            lambda: self.last_message_ns,
            spec,
            lambda: asyncio.sleep(0.1),
        )
        await asyncio.sleep(spec.get("linger", 0.3))  # late duplicates would show here
        totals, early, late, samples = expected.tally()
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
            "frames": self.inbox.frames,
            "bytes": self.inbox.bytes,
            "foreign_names": self.inbox.foreign_names,
            "client_cpu_s": round(cpu_seconds() - self.cpu_mark, 3),
        }

    async def online(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Each member's view of who is online, for the parent to compare with the truth.

        First wait (bounded) until no frame at all has arrived for `quiet` seconds: a
        presence frame may still sit behind a backlog of posts in a socket's buffer.
        """
        start = now_ns()
        while now_ns() - start < spec["limit"] * 1e9:
            if now_ns() - max(self.inbox.last_frame_ns, start) >= spec["quiet"] * 1e9:
                break
            await asyncio.sleep(0.05)
        return {
            "settled": now_ns() - max(self.inbox.last_frame_ns, start) >= spec["quiet"] * 1e9,
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
        if cmd in ("hangup", "close"):  # `close` also ends the process (bench.client_procs.serve)
            return await self.close()
        return {"error": f"unknown command {cmd}"}

    async def close(self) -> dict[str, Any]:
        self.closing = True
        if self._posting is not None:
            self._stop_posting.set()
            self._posting.cancel()
            self._posting = None
        closed = len(self.members)
        await close_all(self.members)
        self.members = []
        return {"closed": closed}
