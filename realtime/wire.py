"""Pre-framed sends: one WebSocket frame per event per worker, written straight to each socket.

A server-to-client frame is not masked, so the bytes of a text frame are the
same for every socket that gets it. The hub builds them once per event
(`text_frame`) and each socket's `Writer` puts them on its connection with
no ASGI message, no per-socket framing and, on daphne, no Twisted write
registration (which costs two extra epoll calls per frame and was about 40 %
of fan-out time in a py-spy profile).

`writer_for(send)` recognises the server behind an ASGI `send` callable:
daphne (Twisted/autobahn), and uvicorn's `websockets`, `websockets-sansio`
and `wsproto` implementations. For anything else it returns None and the
consumer sends through ASGI as usual, so the fast path is an optimisation,
never a requirement. A writer drops the frame when the connection is no
longer open: the client has gone or is going (its disconnect is on its way
to the consumer) and resumes from the database when it returns. An ASGI
send there would only raise.

Every writer also bounds what a client that stops reading can cost: once
the connection holds more than `WS_MAX_BUFFER_BYTES` unsent, it is aborted.
The client resumes from the database when it comes back.

Ordering: a writer writes synchronously, in call order, and so does every
server's ASGI send before its first suspension point, so frames sent either
way leave in the order the consumer sent them.
"""

from __future__ import annotations

import functools
import logging
import struct
import sys
from collections.abc import Callable
from typing import Any

from realtime import adapter

logger = logging.getLogger("realtime.wire")


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


def writer_for(send: Any, *, limit: int) -> Writer | None:
    """A pre-framed writer for the connection behind ASGI `send`, or None."""
    # Channels' SessionMiddleware wraps send to save the session on an HTTP
    # response start; a WebSocket frame passes straight through it.
    sessions = sys.modules.get("channels.sessions")
    while sessions is not None and isinstance(
        getattr(send, "__self__", None), sessions.InstanceSessionWrapper
    ):
        send = send.__self__.real_send
    # daphne hands the application functools.partial(server.handle_reply, protocol).
    if isinstance(send, functools.partial) and send.args:
        daphne_ws = sys.modules.get("daphne.ws_protocol")
        protocol = send.args[0]
        if daphne_ws is not None and isinstance(protocol, daphne_ws.WebSocketProtocol):
            return _TwistedWriter(protocol, limit) if adapter.supported("daphne") else None
        return None
    # uvicorn hands the application a bound method of its protocol object.
    protocol = getattr(send, "__self__", None)
    if protocol is None:
        return None
    module = type(protocol).__module__
    if module.startswith("uvicorn.") and not adapter.supported("uvicorn"):
        return None
    if module == "uvicorn.protocols.websockets.websockets_impl":
        from websockets.protocol import State

        return _AsyncioWriter(protocol, limit, lambda p: p.state is State.OPEN)
    if module == "uvicorn.protocols.websockets.websockets_sansio_impl":
        from websockets.protocol import State

        return _AsyncioWriter(protocol, limit, lambda p: p.conn.state is State.OPEN)
    if module == "uvicorn.protocols.websockets.wsproto_impl":
        from wsproto.connection import ConnectionState

        return _AsyncioWriter(
            protocol,
            limit,
            lambda p: not p.close_sent and p.conn.state is ConnectionState.OPEN,
        )
    return None


def twisted_buffered(transport: Any) -> int:
    """Bytes a Twisted TCP transport holds that the client has not taken yet."""
    pending = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return pending + getattr(transport, "_tempDataLen", 0)


def _too_slow(buffered: int) -> None:
    logger.warning("event=slow_client_dropped buffered=%d", buffered)


class _AsyncioWriter(_Corkable):
    """uvicorn: asyncio's transport.write already tries the socket first."""

    __slots__ = ("is_open", "limit", "protocol")

    def __init__(self, protocol: Any, limit: int, is_open: Callable[[Any], bool]) -> None:
        super().__init__()
        self.protocol = protocol
        self.limit = limit
        self.is_open = is_open

    def write(self, frame: bytes) -> None:
        protocol = self.protocol
        transport = protocol.transport
        if transport is None or transport.is_closing() or not self.is_open(protocol):
            return
        transport.write(frame)
        buffered = transport.get_write_buffer_size()
        if buffered > self.limit:
            _too_slow(buffered)
            transport.abort()


class _TwistedWriter(_Corkable):
    """daphne: send on the socket directly while Twisted has nothing queued for it.

    Twisted's `transport.write` always queues and registers the descriptor for
    writing, then sends on the next reactor turn and unregisters. When its
    buffers are empty, sending now is what it would do anyway, minus the two
    registrations; whatever the kernel does not take goes to Twisted's queue,
    so later writes (ours or autobahn's) stay behind it.
    """

    __slots__ = ("limit", "protocol")

    def __init__(self, protocol: Any, limit: int) -> None:
        super().__init__()
        self.protocol = protocol
        self.limit = limit

    def write(self, frame: bytes) -> None:
        protocol = self.protocol
        transport = protocol.transport
        if protocol.state != protocol.STATE_OPEN or transport is None:
            return
        sock = getattr(transport, "socket", None)  # None under TLS: write through Twisted
        if (
            sock is not None
            and transport.connected
            and not transport.disconnecting
            and not twisted_buffered(transport)
        ):
            try:
                sent = sock.send(frame)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                # A broken connection: let Twisted find out and close it the usual way.
                sent = 0
            if sent == len(frame):
                return
            frame = frame[sent:]
        transport.write(frame)
        buffered = twisted_buffered(transport)
        if buffered > self.limit:
            _too_slow(buffered)
            transport.abortConnection()
