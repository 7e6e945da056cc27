"""The one place that reaches into the servers' internals: daphne, Twisted and autobahn.

`config.asgi` calls `install()` once per process. Under daphne (the `daphne`
command, `manage.py runserver`, `realtime.serve`) it checks that daphne,
autobahn and Twisted are the versions pinned in requirements.txt and, if so:

- builds daphne's sockets with `RelayWebSocketProtocol`, which sends every
  close code a server may send, with its reason. daphne hands the
  application's close to autobahn's user-level `sendClose`, which accepts only
  1000 and 3000-4999 (the browser API's rule) and raises for 1009, 1011 and
  1012, leaving the socket open and silent; daphne also drops the reason
  (django/daphne#374). It also answers an Origin that autobahn cannot parse
  with 403, as the application does for one it refuses, and bounds what a
  client that stops reading can cost on the ASGI send path;
- drains on SIGTERM as `realtime.serve` does (`realtime.drain`): it stops
  listening, sockets mid-handshake get 1012, open ones get 1012 after
  DRAIN_GRACE_SECONDS, then the reactor stops. Plain daphne would cut every
  connection at once (1006);
- bounds the time a connection may take to send its request headers
  (HTTP_HEADER_TIMEOUT_SECONDS): Twisted's only timeout is an idle one that
  every byte restarts, so a handshake fed a byte every few seconds stayed open.

Whatever the version, under daphne it masks credentials in the access log's
request paths (`realtime.logging.redact`): daphne's command line writes that
log to stdout itself, past the logging filters.

With other versions it logs a warning and installs nothing else: the
application then runs on plain ASGI (close codes as that daphne sends them, no
drain, no header deadline), and `realtime.wire` sends through ASGI rather than
its pre-framed writers, as it does under a uvicorn other than the pinned one
(`supported`). uvicorn sends every close code and drains with 1012 itself;
under the pinned uvicorn this module adds the same header deadline to its h11
protocol, which arms no timer until a first request has been answered (an idle
or trickling connection stayed open for good, and uvicorn has no option for it).
"""

from __future__ import annotations

import logging
import signal
import sys
from importlib.metadata import PackageNotFoundError, version

logger = logging.getLogger("realtime.adapter")

# The versions whose internals this module and realtime.wire were written
# against, by server (requirements.txt pins them).
PINNED = {
    "daphne": {"daphne": "4.2.3", "autobahn": "26.10.2", "Twisted": "26.10.0"},
    "uvicorn": {"uvicorn": "0.54.0", "websockets": "17.4"},
}

# Close codes an endpoint may send: 1004-1006 and 1015 are reserved for reporting only.
SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)})

_state: dict[str, bool] = {}


def supported(server: str) -> bool:
    """True when `server`'s packages are the pinned versions (checked once per process)."""
    if server not in _state:
        pinned = PINNED[server]
        found = {}
        for name in pinned:
            try:
                found[name] = version(name)
            except PackageNotFoundError:
                found[name] = None
        _state[server] = found == pinned
        if found != pinned:
            logger.warning(
                "adapter: %s internals not adapted (want %s, found %s); running on plain ASGI%s",
                server,
                pinned,
                found,
                ": close codes 1009/1011/1012 may not reach clients and SIGTERM does not drain"
                if server == "daphne"
                else "",
            )
    return _state[server]


def under_daphne() -> bool:
    """daphne's server module is loaded: always under daphne, before the application.

    Also under uvicorn, since daphne's app config (`daphne` is an installed
    app, for runserver) imports it; what `install` sets up for daphne is then
    inert: no daphne factory builds a connection and Twisted's reactor never runs.
    """
    return "daphne.server" in sys.modules


def under_uvicorn() -> bool:
    """This process serves through uvicorn (its server module is loaded before the application;
    nothing else imports it)."""
    return "uvicorn.server" in sys.modules


def install(*, drain_on_sigterm: bool = True) -> None:
    """Adapt the server running this process (daphne or uvicorn); idempotent."""
    if under_uvicorn() and supported("uvicorn"):
        # Not exclusive of the daphne branch: Django's set-up imports daphne.server
        # (daphne is an installed app) under uvicorn too, where it is inert.
        _bound_uvicorn_headers()
    if _state.get("installed") or not under_daphne():
        return
    _redact_daphne_access_log()
    if not supported("daphne"):
        return
    _state["installed"] = True
    from daphne.http_protocol import HTTPFactory
    from daphne.ws_protocol import WebSocketFactory

    from realtime.daphne_protocol import RelayWebSocketProtocol, header_deadline_channel

    # daphne builds its factories in Server.run(), after the application is
    # imported, and they build every connection from these class attributes.
    WebSocketFactory.protocol = RelayWebSocketProtocol
    HTTPFactory.protocol = header_deadline_channel
    if drain_on_sigterm:
        from twisted.internet import reactor

        reactor.callWhenRunning(_drain_on_sigterm)


def _redact_daphne_access_log() -> None:
    # Every access log entry (the command line's AccessLogGenerator, which
    # writes to stdout, and runserver's) comes through Server.log_action with
    # the request's path and query string as the client sent them.
    from daphne.server import Server

    if getattr(Server.log_action, "redacts", False):
        return
    from realtime.logging import redact

    log_action = Server.log_action

    def redacting_log_action(self, protocol, action, details):
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact(details["path"])}
        return log_action(self, protocol, action, details)

    redacting_log_action.redacts = True
    Server.log_action = redacting_log_action


def _bound_uvicorn_headers() -> None:
    """A deadline on uvicorn's h11 protocol: a whole request head within HTTP_HEADER_TIMEOUT_SECONDS.

    Armed when the connection opens and again after each response (uvicorn's
    own keep-alive timer starts only then and is cancelled by any byte);
    disarmed as soon as h11 has parsed a request's head. httptools is not
    installed (requirements.txt), so uvicorn's "auto" picks h11.
    """
    import h11
    from django.conf import settings
    from uvicorn.protocols.http.h11_impl import H11Protocol

    if getattr(H11Protocol, "relay_header_deadline", False):
        return
    connection_made = H11Protocol.connection_made
    connection_lost = H11Protocol.connection_lost
    handle_events = H11Protocol.handle_events
    on_response_complete = H11Protocol.on_response_complete

    def disarm(protocol) -> None:
        timer = protocol.__dict__.pop("_relay_header_timer", None)
        if timer is not None:
            timer.cancel()

    def expire(protocol) -> None:
        protocol.__dict__.pop("_relay_header_timer", None)
        # IDLE: h11 has not seen a whole request head since the timer was armed.
        if protocol.conn.their_state is h11.IDLE and not protocol.transport.is_closing():
            protocol.transport.close()

    def arm(protocol) -> None:
        disarm(protocol)
        protocol._relay_header_timer = protocol.loop.call_later(
            settings.HTTP_HEADER_TIMEOUT_SECONDS, expire, protocol
        )

    def relay_connection_made(self, transport):
        connection_made(self, transport)
        arm(self)

    def relay_connection_lost(self, exc):
        disarm(self)
        connection_lost(self, exc)

    def relay_handle_events(self):
        handle_events(self)
        if self.conn.their_state is not h11.IDLE:
            disarm(self)

    def relay_on_response_complete(self):
        if not self.transport.is_closing():
            arm(self)
        on_response_complete(self)

    H11Protocol.connection_made = relay_connection_made
    H11Protocol.connection_lost = relay_connection_lost
    H11Protocol.handle_events = relay_handle_events
    H11Protocol.on_response_complete = relay_on_response_complete
    H11Protocol.relay_header_deadline = True


def _drain_on_sigterm() -> None:
    # Runs once the reactor has installed its own handlers (it would stop at
    # once, cutting every socket), so these replace them.
    import asyncio

    from twisted.internet import reactor, tcp

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
    from django.conf import settings
    from twisted.internet import reactor

    from realtime import drain

    try:
        await drain.drain(
            grace=settings.DRAIN_GRACE_SECONDS, close_timeout=settings.DRAIN_CLOSE_TIMEOUT_SECONDS
        )
    finally:
        reactor.stop()


def handlers_installed_by_launcher() -> None:
    """realtime.serve drains itself (and stops listening first): skip the plain-daphne handlers."""
    _state["drain_handlers"] = True


def is_closed_send_error(exc: BaseException) -> bool:
    """What an ASGI send raises when the client has just gone.

    uvicorn raises ClientDisconnected (an OSError). daphne's send reaches
    autobahn, which raises Disconnected once the close handshake has begun
    (the client's close frame arrived) but before daphne has noticed that the
    connection is gone; matched by name, so nothing imports autobahn here.
    """
    if isinstance(exc, OSError):
        return True
    kind = type(exc)
    return kind.__name__ == "Disconnected" and kind.__module__ == "autobahn.exception"
