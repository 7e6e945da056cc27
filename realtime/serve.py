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

Close codes, the Origin refusal and the slow-client bound are
realtime.adapter's, installed by `config.asgi` under any daphne launcher.
"""

# daphne.cli imports daphne.server, which must install the asyncio reactor
# before anything else imports Twisted.
from daphne.cli import CommandLineInterface  # isort: skip
from daphne.server import Server  # isort: skip

import asyncio
import logging
import signal

from twisted.internet import reactor

from realtime import adapter

logger = logging.getLogger("realtime.serve")

# This launcher drains itself, and stops listening first: realtime.adapter's
# SIGTERM handlers for plain daphne stand aside.
adapter.handlers_installed_by_launcher()


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
