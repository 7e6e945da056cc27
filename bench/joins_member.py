"""One member's socket in the `joins` workload and the frames it receives (bench/joins_client.py
runs them): every frame counted with its bytes on the wire, by kind, and parsed once per distinct
payload into message ids, presence changes and the welcome's online list (user indices)."""

from __future__ import annotations

import asyncio
from array import array
from typing import TYPE_CHECKING, Any

import orjson
from picows import WSListener, WSMsgType, WSTransport

from bench.client import now_ns

if TYPE_CHECKING:
    from bench.joins_client import JoinsClient

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


class Inbox:
    """What the members of one process received: frames and bytes by kind, and the parsed frames."""

    def __init__(self, mode: str, tag: str, nbits: int) -> None:
        self.mode = mode  # "chat" (the service) or "tutorial" (the baselines)
        self.tag_prefix = tag + ":"
        self.nbits = nbits
        self._cache: dict[bytes, tuple] = {}
        self.frames = dict.fromkeys(KINDS, 0)
        self.bytes = dict.fromkeys(KINDS, 0)
        self.foreign_names = 0
        self.last_frame_ns = 0

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
            client.inbox.tally("other", size)
            return
        item = client.inbox.parse(frame.get_payload_as_bytes())
        kind = item[0]
        client.inbox.tally(kind, size)
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
