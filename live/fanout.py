"""A worker's live topics: one hub subscription per topic, whatever the number of its sockets.

Each topic with local subscribers has one `Feed`, the hub's only subscriber
for the topic's group on this worker. A published value reaches each worker
with subscribers once (one channel-layer message per publish); the feed
makes one `Value` of it, whose frame is encoded and framed once, and offers
it to each subscribed socket's outbox (`live.outbox`), which writes it now
or keeps it as that topic's newest pending value.

A feed also drops a value older than the newest it has seen: publishes from
two processes can arrive in either order, and no socket may get an older
value after a newer one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any

from live.store import AsyncStore, Value
from realtime.fanout.hub import Hub
from realtime.fanout.per_hub import per_hub
from realtime.protocol import topic_group

if TYPE_CHECKING:
    from live.outbox import Outbox

logger = logging.getLogger("live.fanout")

# Outboxes offered a value between two yields to the event loop (as the hub does for its sockets).
_YIELD_EVERY = 128


def _value(event: dict[str, Any]) -> Value | None:
    try:
        topic, epoch, seq, data = event["topic"], event["epoch"], event["seq"], event["data"]
    except KeyError:
        return None
    if not (isinstance(topic, str) and isinstance(data, str)):
        return None
    if not (isinstance(epoch, int) and isinstance(seq, int)):
        return None
    return Value(topic, epoch, seq, data)


class Feed:
    """The hub's subscriber for one topic on this worker (see the module docstring)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.outboxes: set[Outbox] = set()
        self.newest: Value | None = None
        self.joined: asyncio.Future | None = None

    def hub_deliver(self, event: dict[str, Any]) -> Awaitable[None] | None:
        value = _value(event)
        if value is None or value.topic != self.topic:
            logger.warning("live: dropped a malformed topic event")
            return None
        if not value.newer_than(self.newest):
            return None  # an older publish that arrived late: every socket has a newer one
        self.newest = value
        outboxes = tuple(self.outboxes)
        if len(outboxes) > _YIELD_EVERY:
            return self._offer_in_turns(value, outboxes)
        for outbox in outboxes:
            outbox.offer(value)
        return None

    async def _offer_in_turns(self, value: Value, outboxes: tuple[Outbox, ...]) -> None:
        # Offers do not wait, so a big topic would hold the loop for all of them:
        # let other sockets' replies in between.
        for count, outbox in enumerate(outboxes, 1):
            outbox.offer(value)
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    def hub_lost(self) -> None:
        # The live feed broke and values may be lost: close the sockets, which
        # reconnect and subscribe again to get the latest values.
        for outbox in tuple(self.outboxes):
            outbox.lost()

    def hub_cork(self) -> None:
        """Not used: an outbox writes each value itself or keeps the newest."""

    def hub_uncork(self) -> None:
        """See hub_cork."""


class Router:
    """This worker's feeds, and its Redis connections for snapshots and client publishes."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.feeds: dict[str, Feed] = {}
        self.store = AsyncStore()

    async def add(self, topics: Iterable[str], outbox: Outbox) -> None:
        """Subscribe `outbox` to `topics`: values published from now on reach it."""
        joins = []
        for topic in topics:
            feed = self.feeds.get(topic)
            if feed is None:
                feed = self.feeds[topic] = Feed(topic)
            feed.outboxes.add(outbox)
            if feed.joined is None or (feed.joined.done() and feed.joined.exception() is not None):
                feed.joined = asyncio.ensure_future(self.hub.subscribe(topic_group(topic), feed))
            joins.append(feed.joined)
        outcomes = await asyncio.gather(*(asyncio.shield(join) for join in joins), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def remove(self, topics: Iterable[str], outbox: Outbox) -> None:
        for topic in topics:
            feed = self.feeds.get(topic)
            if feed is None:
                continue
            feed.outboxes.discard(outbox)
            if feed.outboxes:
                continue
            del self.feeds[topic]
            if feed.joined is not None:
                # A join still under way would put the feed back into the hub after this.
                await asyncio.gather(asyncio.shield(feed.joined), return_exceptions=True)
            await self.hub.unsubscribe(topic_group(topic), feed)

    async def close(self) -> None:
        await self.store.aclose()


# The router of this event loop's hub (a worker has one; tests one per test).
get_router = per_hub(Router, close=Router.close)
