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

When declarations change (`Event.TOPIC_RULES`, one message to every worker
after the change commits), the router empties the process's rule cache,
reads the declarations once, and hands each socket that holds a topic they
cover a `TOPIC_RECHECK` with them; the socket ends the subscriptions it may
no longer hold (`live.consumers`). Changes that arrive while a re-check is
being read are merged into the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any

from live import selectors
from live.store import AsyncStore, Value
from realtime import db
from realtime.fanout.events import LocalEvent
from realtime.fanout.hub import Hub
from realtime.fanout.per_hub import per_hub
from realtime.operations.errors import UNAVAILABLE_ERRORS
from realtime.protocol import Event, topic_group

if TYPE_CHECKING:
    from live.outbox import Outbox

logger = logging.getLogger("live.fanout")

# Outboxes offered a value between two yields to the event loop (as the hub does for its sockets).
_YIELD_EVERY = 128

load_rules = db.frames(selectors.load_rules)


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


def _declarations(event: dict[str, Any]) -> list[tuple[str, bool]] | None:
    declarations = event.get("declarations")
    if not isinstance(declarations, list):
        return None
    pairs = []
    for pair in declarations:
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            return None
        pairs.append((pair[0], bool(pair[1])))
    return pairs


def _covered(topic: str, declarations: Iterable[tuple[str, bool]]) -> bool:
    return any(topic.startswith(name) if prefix else topic == name for name, prefix in declarations)


class Router:
    """This worker's feeds, and its Redis connections for snapshots and client publishes."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.feeds: dict[str, Feed] = {}
        self.store = AsyncStore()
        # Declaration changes heard so far: a socket whose subscribe read the declarations
        # before one of them re-checks what it subscribed (live.consumers).
        self.revision = 0
        self._changed: list[tuple[str, bool]] = []
        self._rechecking: asyncio.Future | None = None
        hub.observe(Event.TOPIC_RULES, self.declarations_changed)

    # --- declarations changed ---------------------------------------------------------
    def declarations_changed(self, group: str, event: dict[str, Any]) -> None:
        """A hub observer: once per worker per change (see the module docstring)."""
        declarations = _declarations(event)
        if declarations is None:
            logger.warning("live: dropped a malformed declarations event")
            return
        selectors.forget_rules()
        self.revision += 1
        self._changed.extend(declarations)
        if self._rechecking is None or self._rechecking.done():
            self._rechecking = asyncio.ensure_future(self._recheck())

    async def _recheck(self) -> None:
        while self._changed:
            declarations, self._changed = self._changed, []
            try:
                rules = await load_rules()
            except Exception as exc:
                # Subscriptions stay as they are; new subscribes read the declarations afresh.
                logger.warning(
                    "live: declarations changed but could not be read; subscriptions kept",
                    exc_info=not isinstance(exc, UNAVAILABLE_ERRORS),
                )
                continue
            held: dict[Outbox, list[str]] = {}
            for topic, feed in list(self.feeds.items()):
                if _covered(topic, declarations):
                    for outbox in feed.outboxes:
                        held.setdefault(outbox, []).append(topic)
            for count, (outbox, topics) in enumerate(held.items(), 1):
                event = LocalEvent({"type": Event.TOPIC_RECHECK, "topics": topics, "rules": rules})
                try:
                    await outbox.recheck(event)
                except Exception:
                    logger.exception("live: re-checking a socket's subscriptions failed")
                if count % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)

    # --- subscriptions ------------------------------------------------------------------

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
        if self._rechecking is not None:
            self._rechecking.cancel()
        await self.store.aclose()


# The router of this event loop's hub (a worker has one; tests one per test).
get_router = per_hub(Router, close=Router.close)
