"""daphne's WebSocket protocol with every close code and its reason (installed by realtime.adapter).

Imported only under daphne, by `realtime.adapter.install()`: importing
daphne's modules elsewhere would install Twisted's reactor in a uvicorn worker.
"""

from __future__ import annotations

import logging

from autobahn.util import encode_truncate
from daphne.ws_protocol import WebSocketProtocol

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
