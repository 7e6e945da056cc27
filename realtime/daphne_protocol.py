"""daphne's WebSocket protocol with every close code and its reason, and its HTTP channel with a
deadline on request headers (both installed by realtime.adapter).

Imported only under daphne, by `realtime.adapter.install()`: importing
daphne's modules elsewhere would install Twisted's reactor in a uvicorn worker.
"""

from __future__ import annotations

import logging

from autobahn.util import encode_truncate
from daphne.ws_protocol import WebSocketProtocol
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol

from realtime.adapter import SENDABLE_CLOSE_CODES
from realtime.wire import twisted_buffered

logger = logging.getLogger("realtime.adapter")


class RelayWebSocketProtocol(WebSocketProtocol):
    def handle_reply(self, message):
        kind = message.get("type")
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
        # autobahn parses the Origin itself and refuses one it cannot parse (a
        # port out of range, `http://[::1`) with 400, before the application
        # sees the handshake. The contract refuses an Origin that is not
        # allowed with 403, as realtime.middleware.OriginCheck does.
        if reason.startswith("HTTP Origin header"):
            code = 403
        super().failHandshake(reason, code, responseHeaders)

    def _drop_if_not_reading(self) -> None:
        # daphne's send never waits: what a client does not read piles up in
        # this process. Past the limit the client is cut off (it cannot read a
        # close frame either); it resumes from the database when it returns.
        from django.conf import settings

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
        from django.conf import settings

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
