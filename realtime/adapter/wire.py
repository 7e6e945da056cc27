"""Pre-framed sends: one WebSocket frame per event per worker, written straight to each socket.

A server-to-client frame is not masked, so the bytes of a text frame are the
same for every socket that gets it. The hub builds them once per event
(`text_frame`) and each socket's `Writer` puts them on its connection with
no ASGI message, no per-socket framing and, on daphne, no Twisted write
registration (which costs two extra epoll calls per frame and was about 40 %
of fan-out time in a py-spy profile).

The writers themselves reach into the servers' connections, so they live in
the adapter (`realtime.adapter.writer_for`): daphne (Twisted/autobahn) and
uvicorn's `websockets` and `websockets-sansio` implementations. For anything
else, or when the adapter is off for that server, there is no writer and the
consumer sends through ASGI as usual, so the fast path is an optimisation,
never a requirement. A writer drops the frame when the connection is no
longer open: the client has gone or is going (its disconnect is on its way
to the consumer) and resumes from the database when it returns. An ASGI
send there would only raise. Every writer also bounds what a client that
stops reading can cost (`WS_MAX_BUFFER_BYTES`).

Ordering: a writer writes synchronously, in call order, and so does every
server's ASGI send before its first suspension point, so frames sent either
way leave in the order the consumer sent them.
"""

from __future__ import annotations

import struct


class _Corkable:
    """Writers can be corked: frames written while corked leave in one write at `uncork`.

    The hub corks a socket while it hands it several events in a row, which
    turns one system call per event into one per round.
    """

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: list[bytes] | None = None

    def cork(self) -> None:
        if self.held is None:
            self.held = []

    def uncork(self) -> None:
        held, self.held = self.held, None
        if held:
            self.write(held[0] if len(held) == 1 else b"".join(held))

    def __call__(self, frame: bytes) -> None:
        if self.held is not None:
            self.held.append(frame)
        else:
            self.write(frame)

    def write(self, frame: bytes) -> None:
        raise NotImplementedError

    def buffered(self) -> int:
        """Bytes written that the client has not taken yet (live.outbox conflates past a bound)."""
        return 0


Writer = _Corkable

_FIN_TEXT = 0x81


def text_frame(text: str) -> bytes:
    """One final, unmasked text frame (RFC 6455 5.2) carrying `text`."""
    payload = text.encode("utf-8")
    size = len(payload)
    if size < 126:
        return bytes((_FIN_TEXT, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", _FIN_TEXT, 126, size) + payload
    return struct.pack("!BBQ", _FIN_TEXT, 127, size) + payload
