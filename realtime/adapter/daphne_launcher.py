"""daphne with a graceful drain: the server class and command line of `python -m realtime.serve`.

Subclasses daphne's Server and CommandLineInterface and reaches Twisted's
asyncio loop (`reactor._asyncioEventloop`), so it lives in the adapter.
Imported first by `realtime.serve`, before anything imports Twisted.
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

        from realtime.adapter import drain

        try:
            await drain.drain(
                grace=settings.DRAIN_GRACE_SECONDS, close_timeout=settings.DRAIN_CLOSE_TIMEOUT_SECONDS
            )
        finally:
            self.stop()


class DrainingCommandLineInterface(CommandLineInterface):
    description = "daphne, draining sockets with 1012 on SIGTERM"
    server_class = DrainingServer
