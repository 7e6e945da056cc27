"""`python -m realtime.serve [daphne options] config.asgi:application`: daphne with a graceful drain.

Takes exactly daphne's command-line options. What differs is SIGTERM (and
SIGINT). Plain daphne lets Twisted stop the reactor at once: application
instances are cancelled and connections are dropped without a close frame, so
every client sees 1006 and reconnects at the same moment. Here the worker:

1. stops listening, so the proxy sends new connections to the other workers
   (nginx retries the next upstream on a refused connection);
2. refuses sockets still mid-handshake with 1012 and answers /readyz with 503;
3. after DRAIN_GRACE_SECONDS closes every open socket with 1012 and waits up
   to DRAIN_CLOSE_TIMEOUT_SECONDS for the clients to answer the close;
4. stops the reactor and exits 0.

A second SIGTERM/SIGINT during the drain stops at once.

It also fixes close codes. daphne hands the application's close to
autobahn's user-level `sendClose`, which accepts only 1000 and 3000-4999
(the browser API's rule) and raises for 1009, 1011 and 1012, and daphne
drops the reason (django/daphne#374). Our protocol class sends every close
code a server may send (RFC 6455 and the IANA registry) with its reason.
"""

# daphne.cli imports daphne.server, which must install the asyncio reactor
# before anything else imports Twisted.
from daphne.cli import CommandLineInterface  # isort: skip
from daphne.server import Server  # isort: skip

import asyncio
import logging
import signal

from autobahn.util import encode_truncate
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet import reactor

from realtime.wire import twisted_buffered

logger = logging.getLogger("realtime.serve")


# Close codes an endpoint may send: 1004-1006 and 1015 are reserved for reporting only.
SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)})


class CloseCodeWebSocketProtocol(WebSocketProtocol):
    def handle_reply(self, message):
        if message.get("type") == "websocket.send":
            super().handle_reply(message)
            self._drop_if_not_reading()
            return
        code = message.get("code") or 1000
        if message.get("type") == "websocket.close" and self.state == self.STATE_OPEN:
            if code in SENDABLE_CLOSE_CODES:
                reason = message.get("reason") or ""
                self.sendCloseFrame(
                    code=code, reasonUtf8=encode_truncate(reason, 123) if reason else None, isReply=False
                )
                return
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


class DrainingServer(Server):
    def __init__(self, *args, **kwargs):
        # Our handlers replace Twisted's, which would stop the reactor at once.
        kwargs["signal_handlers"] = False
        super().__init__(*args, **kwargs)
        self.ports = []
        self.drain_task: asyncio.Future | None = None

    def listen_success(self, port):
        self.ports.append(port)
        super().listen_success(port)

    def run(self):
        # Only this launcher's process builds its sockets with the fixed protocol.
        WebSocketFactory.protocol = CloseCodeWebSocketProtocol
        loop = reactor._asyncioEventloop
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.begin_drain, signum)
        super().run()

    def begin_drain(self, signum: int) -> None:
        if self.drain_task is not None:
            logger.warning("second signal %s during drain: stopping now", signum)
            self.stop()
            return
        for port in self.ports:
            port.stopListening()
        self.drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        from django.conf import settings

        from realtime import drain

        try:
            await drain.drain(
                grace=settings.DRAIN_GRACE_SECONDS, close_timeout=settings.DRAIN_CLOSE_TIMEOUT_SECONDS
            )
        finally:
            self.stop()


class DrainingCommandLineInterface(CommandLineInterface):
    description = "daphne, draining sockets with 1012 on SIGTERM"
    server_class = DrainingServer


def main() -> None:
    DrainingCommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
