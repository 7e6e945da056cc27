"""What the adapter changes in daphne, Twisted and autobahn (installed by `realtime.adapter.install()`).

daphne's WebSocket protocol with every close code and its reason and with
ASGI's WebSocket Denial Response extension (a handshake answered with an HTTP
status, headers and body), its HTTP channel with a deadline on request
headers, the access log's masked paths and the drain on SIGTERM under plain
daphne.

Imported only under daphne, by `realtime.adapter.install()`: importing
daphne's modules elsewhere would install Twisted's reactor in a uvicorn worker.
"""

from __future__ import annotations

import asyncio
import http
import logging
import pprint
import signal

from autobahn.util import encode_truncate
from autobahn.websocket import protocol as autobahn_protocol
from daphne import server as daphne_server
from daphne.http_protocol import HTTPFactory
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from django.conf import settings
from twisted.internet import reactor, tcp
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol

from realtime.adapter import SENDABLE_CLOSE_CODES, _state
from realtime.adapter.writers import twisted_buffered

logger = logging.getLogger("realtime.adapter")


# The ASGI extension, and its two messages, that answer a handshake with an HTTP response.
DENIAL_RESPONSE = "websocket.http.response"
DENIAL_MESSAGES = ("websocket.http.response.start", "websocket.http.response.body")
FRAMING_HEADERS = frozenset({b"content-length", b"connection", b"transfer-encoding"})


class _Formatted:
    """`pformat(value)`, put off until a log line that shows it is written."""

    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class RelayWebSocketProtocol(WebSocketProtocol):
    # (status, headers, body parts) of a denial response the application has begun.
    _denial: tuple[int, list, list[bytes]] | None = None

    def _connectionMade(self):
        # autobahn pretty-prints every connection's configuration for a debug
        # line, whatever the log level: 13 % of a handshake's CPU under daphne
        # (py-spy, 2,000 sockets connecting). The line is unchanged when debug
        # logging is on; otherwise nothing is formatted.
        autobahn_protocol.pformat = _Formatted
        try:
            super()._connectionMade()
        finally:
            autobahn_protocol.pformat = pprint.pformat

    def handle_reply(self, message):
        kind = message.get("type")
        if kind in DENIAL_MESSAGES:
            self._deny(message)
            return
        if kind == "websocket.send":
            if self.state in (self.STATE_CLOSING, self.STATE_CLOSED):
                # The close handshake has begun: autobahn would raise, and the
                # client, gone or going, resumes from the database anyway.
                return
            super().handle_reply(message)
            self._drop_if_not_reading()
            return
        if kind == "websocket.close" and self.state == self.STATE_OPEN:
            code = message.get("code") or 1000
            if code in SENDABLE_CLOSE_CODES:
                reason = message.get("reason") or ""
                # autobahn's sendClose refuses 1009, 1011 and 1012 and daphne
                # drops the reason: send the frame itself.
                self.sendCloseFrame(
                    code=code, reasonUtf8=encode_truncate(reason, 123) if reason else None, isReply=False
                )
                return
        if kind == "websocket.close" and self.state in (self.STATE_CLOSING, self.STATE_CLOSED):
            return  # already closing: the close handshake is under way
        super().handle_reply(message)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders=None):
        if self._denial is not None:
            self._send_denial()
            return
        # autobahn parses the Origin itself and refuses one it cannot parse (a
        # port out of range, `http://[::1`) with 400, before the application
        # sees the handshake. The contract refuses an Origin that is not
        # allowed with 403, as realtime.authentication.middleware.OriginCheck does.
        if reason.startswith("HTTP Origin header"):
            code = 403
        super().failHandshake(reason, code, responseHeaders)

    def _deny(self, message) -> None:
        """ASGI's WebSocket Denial Response: the handshake answered with the application's status,
        headers and body (daphne only refuses with 403)."""
        if message["type"] == DENIAL_MESSAGES[0]:
            if self.state != self.STATE_CONNECTING or self._denial is not None:
                raise ValueError("websocket.http.response.start after the handshake was answered")
            self._denial = (int(message["status"]), list(message.get("headers", ())), [])
            return
        if self._denial is None or self.state != self.STATE_CONNECTING:
            raise ValueError("websocket.http.response.body without websocket.http.response.start")
        self._denial[2].append(bytes(message.get("body", b"")))
        if not message.get("more_body", False):
            # daphne's refusal (its access-log line, the connection's bookkeeping);
            # autobahn then calls failHandshake, which sends the response instead of 403.
            self.serverReject()

    def _send_denial(self) -> None:
        status, headers, parts = self._denial
        body = b"".join(parts)
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        lines = [f"HTTP/1.1 {status} {phrase}".encode("latin-1")]
        # Framing is ours to set: the body is whole, and the connection closes after it.
        lines += [name + b": " + value for name, value in headers if name.lower() not in FRAMING_HEADERS]
        lines += [b"Content-Length: " + str(len(body)).encode(), b"Connection: close", b"", body]
        self.sendData(b"\r\n".join(lines))
        self.dropConnection(abort=False)

    def _drop_if_not_reading(self) -> None:
        # daphne's send never waits: what a client does not read piles up in
        # this process. Past the limit the client is cut off (it cannot read a
        # close frame either); it resumes from the database when it returns.
        if self.transport is None or twisted_buffered(self.transport) <= settings.WS_MAX_BUFFER_BYTES:
            return
        logger.warning("event=slow_client_dropped buffered=%d", twisted_buffered(self.transport))
        self.transport.abortConnection()


class HeaderDeadlineChannel(HTTPChannel):
    """Twisted's HTTP channel, closed when a request's headers take longer than HTTP_HEADER_TIMEOUT_SECONDS.

    Twisted's `timeOut` is an idle timeout that every byte restarts: a client
    sending one byte every few seconds kept a connection (and its buffers) for
    as long as it liked. This deadline runs from the connection's opening, and
    from each response's end on a kept-alive connection, to the blank line
    that ends the headers; a WebSocket handshake is handed to autobahn only
    after that line, so it is bounded too.
    """

    _header_timer = None

    def connectionMade(self):
        super().connectionMade()
        self._arm_header_deadline()

    def allHeadersReceived(self):
        self._disarm_header_deadline()
        super().allHeadersReceived()

    def requestDone(self, request):
        # Armed first: super() may parse a pipelined request's headers (which disarms it).
        if self.persistent:
            self._arm_header_deadline()
        super().requestDone(request)

    def connectionLost(self, reason):
        self._disarm_header_deadline()
        super().connectionLost(reason)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_timer = self.callLater(settings.HTTP_HEADER_TIMEOUT_SECONDS, self._header_deadline)

    def _disarm_header_deadline(self) -> None:
        timer, self._header_timer = self._header_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self.transport is not None:
            # Twisted's own timeout path: close, and abort if the client does not let go.
            self.timeoutConnection()


def header_deadline_channel(factory) -> _GenericHTTPChannelProtocol:
    """What daphne's HTTPFactory builds per connection (Twisted's default, with the deadline channel)."""
    return _GenericHTTPChannelProtocol(HeaderDeadlineChannel())


def redact_access_log() -> None:
    # Every access log entry (the command line's AccessLogGenerator, which
    # writes to stdout, and runserver's) comes through Server.log_action with
    # the request's path and query string as the client sent them.
    if getattr(Server.log_action, "redacts", False):
        return
    from realtime.operations.redaction import redact

    log_action = Server.log_action

    def redacting_log_action(self, protocol, action, details):
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact(details["path"])}
        return log_action(self, protocol, action, details)

    redacting_log_action.redacts = True
    Server.log_action = redacting_log_action


def install_protocols() -> None:
    """daphne builds its factories in Server.run(), after the application is imported, and they build
    every connection from these class attributes."""
    WebSocketFactory.protocol = RelayWebSocketProtocol
    HTTPFactory.protocol = header_deadline_channel
    advertise_denial_response()
    listen_backlog(settings.LISTEN_BACKLOG)


def listen_backlog(backlog: int) -> None:
    """Give daphne's TCP and UNIX endpoints a listen queue of `backlog` connections.

    daphne hands its endpoint strings to Twisted, whose default queue is 50
    connections. When thousands of clients reconnect at once (a Redis restart,
    a drain), the kernel drops every connection past it and the client's TCP
    stack retries 1, 3, 7, 15 and 31 s later: handshakes took tens of seconds
    while the worker's CPU was two-thirds idle (`python -m bench reconnect`;
    the kernel's ListenOverflows counter). An endpoint that names its own
    backlog (`-e tcp:8000:backlog=N`) keeps it.
    """
    from_string = daphne_server.serverFromString
    if getattr(from_string, "backlog", None) is not None:
        from_string = from_string.wrapped

    def server_from_string(reactor, description):
        text = str(description)
        if text.split(":", 1)[0] in ("tcp", "tcp6", "unix") and "backlog=" not in text:
            text = f"{text}:backlog={backlog}"
        return from_string(reactor, text)

    server_from_string.backlog = backlog
    server_from_string.wrapped = from_string
    daphne_server.serverFromString = server_from_string


def advertise_denial_response() -> None:
    """Name the Denial Response extension in the scope of every socket `RelayWebSocketProtocol` serves:
    daphne builds the scope inside its onConnect and hands it to Server.create_application."""
    if getattr(Server.create_application, "advertises", False):
        return
    create_application = Server.create_application

    def advertising_create_application(self, protocol, scope):
        if isinstance(protocol, RelayWebSocketProtocol):
            scope["extensions"] = {**scope.get("extensions", {}), DENIAL_RESPONSE: {}}
        return create_application(self, protocol, scope)

    advertising_create_application.advertises = True
    Server.create_application = advertising_create_application


def drain_on_sigterm() -> None:
    """Once the reactor runs, replace its SIGTERM/SIGINT handlers (they would stop it at once, cutting
    every socket) with a drain (`realtime.adapter.drain`)."""
    reactor.callWhenRunning(_drain_on_sigterm)


def _drain_on_sigterm() -> None:
    if _state.get("drain_handlers"):
        return  # realtime.serve installed its own, which also stop listening
    loop = asyncio.get_event_loop()
    drain_task: list[asyncio.Future] = []

    def begin(signum: int) -> None:
        if drain_task:
            logger.warning("second signal %s during drain: stopping now", signum)
            reactor.stop()
            return
        # Stop listening first, so the proxy sends new connections to the
        # other workers; the reactor's listening ports are among its readers.
        for reader in reactor.getReaders():
            if isinstance(reader, tcp.Port):
                reader.stopListening()
        drain_task.append(asyncio.ensure_future(_drain_then_stop()))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, begin, signum)


async def _drain_then_stop() -> None:
    from realtime.adapter import drain

    try:
        await drain.drain(
            grace=settings.DRAIN_GRACE_SECONDS, close_timeout=settings.DRAIN_CLOSE_TIMEOUT_SECONDS
        )
    finally:
        reactor.stop()
