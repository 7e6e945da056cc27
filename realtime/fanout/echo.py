"""A round trip through the channel layer on one channel, reused: is the live feed alive?

The hub's heartbeat and `/readyz` both ask the same question: does a message
sent through Redis now come back? Each asks it through a `LayerEcho`: one
channel, read by one task for as long as the echo lives, and a numbered
message per question whose echo is awaited with the caller's own timeout.

Why not `send` then `receive` with a timeout: channels_redis's pub/sub layer
takes a cancelled `receive` as the end of the channel and unsubscribes it. The
next `send` then goes to no subscriber and the `receive` after it subscribes
too late, so every later round trip times out: after one slow answer (Redis
frozen or restarting at the wrong moment) the hub would close its sockets
every few seconds for good, and /readyz would stay 503. A fresh channel per
question instead leaves one subscription behind per question. Here the
reading task is never cancelled by a timeout, so the channel keeps its one
subscription, which redis-py renews after a Redis restart.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

from realtime.protocol import LayerMessage

logger = logging.getLogger("realtime.echo")

ECHO = LayerMessage.ECHO
# How long the reading task waits before reading again after a failed receive
# (the core layer's receive raises while Redis is down; the pub/sub one does not).
RETRY_SECONDS = 1.0


class LayerEcho:
    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel: str | None = None
        self._numbers = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._opening: asyncio.Future | None = None
        self._reader: asyncio.Task | None = None

    async def round_trip(self) -> None:
        """Return once a message sent now has come back. Unbounded: callers add their timeout."""
        if self.channel is None:
            await self._open()
        number = next(self._numbers)
        echoed = self._waiting[number] = asyncio.get_running_loop().create_future()
        try:
            await self.layer.send(self.channel, {"type": ECHO, "n": number})
            await echoed
        finally:
            del self._waiting[number]

    async def _open(self) -> None:
        # Shared by concurrent callers and shielded from their timeouts: a
        # subscription cut off halfway would be neither used nor dropped.
        if self._opening is None or self._opening.done():
            self._opening = asyncio.ensure_future(self._subscribe())
            # A failure nobody awaits any more (the caller timed out) is not an error to report.
            self._opening.add_done_callback(lambda done: done.cancelled() or done.exception())
        await asyncio.shield(self._opening)

    async def _subscribe(self) -> None:
        channel = await self.layer.new_channel()
        self.channel = channel
        self._reader = asyncio.ensure_future(self._read(channel))

    async def _read(self, channel: str) -> None:
        while True:
            try:
                message = await self.layer.receive(channel)
            except Exception:
                logger.debug("echo: receive failed; reading again", exc_info=True)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            # An echo of a question that timed out comes back late or never: ignore it.
            echoed = self._waiting.get(message.get("n"))
            if echoed is not None and not echoed.done():
                echoed.set_result(None)

    async def close(self) -> None:
        """Stop reading; the layer unsubscribes the channel."""
        for task in (self._opening, self._reader):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: S110 - stopping anyway
                    pass
        self._opening = self._reader = None
        self.channel = None
