"""The pre-framed writers: a frame straight onto the connection behind an ASGI `send`.

`writer_for(send)` recognises the server behind an ASGI `send` callable:
daphne (Twisted/autobahn) and uvicorn's `websockets` and `websockets-sansio`
implementations. For anything else, or when the adapter is off for that
server (an unpinned version, a missing internal: `realtime.adapter.check`),
it returns None and the consumer sends through ASGI as usual. See
`realtime.adapter.wire` for the frames and why.

Every writer also bounds what a client that stops reading can cost: once
the connection holds more than `WS_MAX_BUFFER_BYTES` unsent, it is aborted.
The client resumes from the database when it comes back.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any

from realtime import adapter
from realtime.adapter.wire import Writer

logger = logging.getLogger("realtime.wire")


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
    return None


def twisted_buffered(transport: Any) -> int:
    """Bytes a Twisted TCP transport holds that the client has not taken yet."""
    pending = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return pending + getattr(transport, "_tempDataLen", 0)


def _too_slow(buffered: int) -> None:
    logger.warning("event=slow_client_dropped buffered=%d", buffered)


class _AsyncioWriter(Writer):
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

    def buffered(self) -> int:
        transport = self.protocol.transport
        return 0 if transport is None else transport.get_write_buffer_size()


class _TwistedWriter(Writer):
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

    def buffered(self) -> int:
        transport = self.protocol.transport
        return 0 if transport is None else twisted_buffered(transport)
