"""Reads: which declaration covers a topic name, and who may read or publish it.

Every socket asks for every topic it subscribes to, so the declarations (a
short table) are held in memory per process and read again after
`LIVE_RULES_CACHE_SECONDS`, or at once when this process changed one
(`live.receivers`) or heard that another did (`live.fanout`). A read that
began before the cache was emptied is used by its caller but not cached: it
may predate the change.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings

from live.models import Topic
from realtime.protocol import TOPIC_NAME


@dataclass(frozen=True, slots=True)
class Rule:
    """A declaration as sockets and services use it."""

    id: int
    name: str
    prefix: bool
    read: str
    group_ids: frozenset[int]
    client_publish: bool
    publish_rate: float
    publish_burst: int
    max_bytes: int

    @property
    def public(self) -> bool:
        return self.read == Topic.Read.PUBLIC


@dataclass(frozen=True, slots=True)
class Rules:
    exact: dict[str, Rule]
    prefixes: tuple[Rule, ...]  # longest first
    loaded_at: float

    def find(self, name: str) -> Rule | None:
        """The declaration covering `name`, or None (an unknown topic, or not a topic name at all)."""
        if not TOPIC_NAME.fullmatch(name):
            return None
        rule = self.exact.get(name)
        if rule is not None:
            return rule
        for prefix in self.prefixes:
            if name.startswith(prefix.name):
                return prefix
        return None

    def fresh(self) -> bool:
        return time.monotonic() - self.loaded_at < settings.LIVE_RULES_CACHE_SECONDS


_cached: Rules | None = None
_forgotten = 0  # how many times the cache was emptied: a read that began before is not cached
_lock = threading.Lock()


def load_rules() -> Rules:
    """Every declaration, read now (and cached, unless the cache was emptied while it was read:
    a read that began before a change was committed may not see it)."""
    global _cached
    forgotten = _forgotten
    groups: dict[int, set[int]] = {}
    for topic_id, group_id in Topic.groups.through.objects.values_list("topic_id", "group_id"):
        groups.setdefault(topic_id, set()).add(group_id)
    exact: dict[str, Rule] = {}
    prefixes: list[Rule] = []
    for row in Topic.objects.all():
        rule = Rule(
            id=row.pk,
            name=row.name,
            prefix=row.match == Topic.Match.PREFIX,
            read=row.read,
            group_ids=frozenset(groups.get(row.pk, ())),
            client_publish=row.client_publish,
            publish_rate=row.publish_rate,
            publish_burst=row.publish_burst,
            max_bytes=row.max_bytes,
        )
        if rule.prefix:
            prefixes.append(rule)
        else:
            exact[rule.name] = rule
    prefixes.sort(key=lambda rule: len(rule.name), reverse=True)
    rules = Rules(exact=exact, prefixes=tuple(prefixes), loaded_at=time.monotonic())
    with _lock:
        if forgotten == _forgotten:
            _cached = rules
    return rules


def cached_rules() -> Rules | None:
    """The cached declarations while fresh, else None (then `load_rules`)."""
    rules = _cached
    return rules if rules is not None and rules.fresh() else None


def rules() -> Rules:
    return cached_rules() or load_rules()


def forget_rules() -> None:
    global _cached, _forgotten
    with _lock:
        _cached = None
        _forgotten += 1


def topic_rule(name: str) -> Rule | None:
    """The declaration covering topic `name`, or None when no declaration does."""
    return rules().find(name)


def user_group_ids(user) -> frozenset[int]:
    """The groups of `user` (empty for an anonymous one), for rules by group."""
    if user is None or not user.is_authenticated:
        return frozenset()
    return frozenset(user.groups.values_list("pk", flat=True))


def may_read(rule: Rule, *, authenticated: bool, group_ids: frozenset[int]) -> bool:
    """Whether a caller may read a topic under `rule`."""
    if rule.public:
        return True
    if not authenticated:
        return False
    return rule.read == Topic.Read.AUTHENTICATED or bool(rule.group_ids & group_ids)


def may_publish(rule: Rule, *, authenticated: bool, group_ids: frozenset[int]) -> bool:
    """Whether a socket may publish to a topic under `rule`: a logged-in reader, where clients may publish."""
    return rule.client_publish and authenticated and may_read(rule, authenticated=True, group_ids=group_ids)
