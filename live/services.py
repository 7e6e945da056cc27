"""Writes: declaring topics and publishing values.

`publish_topic(name, data)` is the one way a value is published, used by the
publish API, the management commands, `demo_ticker` and any Django code. It
sends at once, not after a transaction commits: topics are not stored in
PostgreSQL, so there is nothing to wait for. A publish is one Redis script
call (the value and its new `seq`, `live.store`) and ONE channel-layer message
to the topic's group, however many sockets are subscribed: each worker with
subscribers gets it once and frames it once for all of them (`live.fanout`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson
from django.contrib.auth.models import Group
from django.db import transaction

from live import demo, selectors, store
from live.models import Topic
from live.selectors import Rule
from realtime.fanout import push
from realtime.protocol import COMMITTED_AT, ErrorCode, Event, broadcast_group, topic_group


class TopicError(Exception):
    """A publish or read that cannot be done; `code` is an error code of the protocol."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def encode_value(data: Any) -> str:
    """`data` as JSON text, or TopicError invalid_message for what JSON cannot carry."""
    try:
        return orjson.dumps(data).decode()
    except TypeError as exc:
        raise TopicError(ErrorCode.INVALID_MESSAGE, f"data is not JSON: {exc}") from None


def checked(name: str, rule: Rule | None, text: str, *, limit: int | None = None) -> Rule:
    """The rule of a publish to `name`, after checking that the topic exists and the value fits."""
    if rule is None:
        raise TopicError(ErrorCode.UNKNOWN_TOPIC, "no such topic")
    cap = rule.max_bytes if limit is None else min(limit, rule.max_bytes)
    if len(text) > cap and len(text.encode()) > cap:
        raise TopicError(ErrorCode.TOO_LARGE, f"data over {cap} bytes as JSON")
    return rule


def topic_event(value: store.Value) -> dict[str, Any]:
    """The channel-layer event of a new value (the `data` travels as the JSON text it was published as)."""
    return {
        "type": Event.TOPIC,
        "topic": value.topic,
        "epoch": value.epoch,
        "seq": value.seq,
        "data": value.data,
        COMMITTED_AT: time.time(),  # the push-latency metric's start
    }


def publish_topic(name: str, data: Any) -> int:
    """Publish `data` as the new value of topic `name` and send it to every subscriber now; its `seq`.

    Raises TopicError: unknown_topic (no declaration covers the name),
    too_large (over the topic's max_bytes), invalid_message (not JSON).
    """
    text = encode_value(data)
    checked(name, selectors.topic_rule(name), text)
    value = store.publish(name, text)
    push.publish_now(topic_group(name), topic_event(value))
    return value.seq


def read_topic(name: str) -> store.Value:
    """The latest value of topic `name` (no access check: see `live.api`)."""
    if selectors.topic_rule(name) is None:
        raise TopicError(ErrorCode.UNKNOWN_TOPIC, "no such topic")
    return store.read([name])[0]


@transaction.atomic
def declare_topic(
    *,
    name: str,
    match: str = Topic.Match.EXACT,
    read: str = Topic.Read.AUTHENTICATED,
    groups: Iterable[Group] = (),
    client_publish: bool = False,
    publish_rate: float = 1.0,
    publish_burst: int = 5,
    max_bytes: int = 16 * 1024,
    description: str = "",
) -> Topic:
    """Create or change the declaration of `name` (an exact name or a prefix)."""
    topic = Topic.objects.filter(name=name, match=match).first() or Topic(name=name, match=match)
    topic.read = read
    topic.client_publish = client_publish
    topic.publish_rate = publish_rate
    topic.publish_burst = publish_burst
    topic.max_bytes = max_bytes
    topic.description = description
    topic.full_clean()
    topic.save()
    topic.groups.set(list(groups))
    return topic


def declarations_changed(declarations: Iterable[tuple[str, bool]]) -> None:
    """These declarations (name, is a prefix) were saved, changed or deleted: after commit, every
    worker re-checks its sockets' subscriptions to the names they cover and ends those no longer
    allowed (`live.fanout`). One channel-layer message, to every worker's hub.

    Called for every change of a declaration however it was made (`live.receivers`).
    """
    covered = sorted({(name, bool(prefix)) for name, prefix in declarations})
    if covered:
        event = {"type": Event.TOPIC_RULES, "declarations": [list(pair) for pair in covered]}
        push.push_after_commit([(broadcast_group(), event)])


def seed_demo_topics() -> Topic:
    """`stocks.`: public, no client publishing, and a price for each of the 50 demo symbols
    that has none yet (so running it again does not move them)."""
    topic = declare_topic(
        name=demo.PREFIX,
        match=Topic.Match.PREFIX,
        read=Topic.Read.PUBLIC,
        client_publish=False,
        max_bytes=1024,
        description="demo stock prices (demo_ticker)",
    )
    transaction.on_commit(_seed_demo_prices)
    return topic


def _seed_demo_prices() -> None:
    names = [demo.topic(symbol) for symbol, _ in demo.SYMBOLS]
    current = store.read(names)
    for (symbol, cents), value in zip(demo.SYMBOLS, current, strict=True):
        if value.seq is None:
            publish_topic(demo.topic(symbol), demo.quote(symbol, cents, cents))
