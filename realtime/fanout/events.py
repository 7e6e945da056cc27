"""Events as they travel: the channel-layer envelopes `push` sends and every hub
reads, and the `LocalEvent` a hub hands its local sockets.

An event for one group travels in an envelope made by `envelope()`, which
names the group so the hub knows which local sockets it is for. An event for
many groups at once (a notification to thousands of inboxes) travels as
batches made by `batch_envelope()` to the broadcast group, which every hub
joins when it starts: the shared part of the event once, and per group only
the fields that differ (`for_group`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from realtime.protocol import LayerMessage, encode

HUB_EVENT = LayerMessage.HUB_EVENT
HUB_BATCH = LayerMessage.HUB_BATCH

T = TypeVar("T")


def envelope(group: str, event: dict[str, Any]) -> dict[str, Any]:
    """The channel-layer message that carries `event` to every hub in `group`."""
    return {"type": HUB_EVENT, "group": group, "event": event}


def batch_envelope(event: dict[str, Any], recipients: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The channel-layer message that carries `event` to many groups, through every hub.

    `recipients` is (group, fields) pairs: each group gets `for_group(event, fields)`.
    """
    return {"type": HUB_BATCH, "event": event, "recipients": recipients}


def for_group(event: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """`event` with one group's own `fields`, a new dict for that group alone.

    A field whose value is a dict in both is merged one level deep, so the
    shared `{"notification": {...}}` takes each inbox's `{"notification":
    {"id": ...}}` without repeating the rest. Existing keys keep their place,
    so the frame reads the same as one built for that group alone.
    """
    merged = dict(event)
    for key, value in fields.items():
        shared = event.get(key)
        merged[key] = {**shared, **value} if isinstance(shared, dict) and isinstance(value, dict) else value
    return merged


class LocalEvent(dict):
    """An event as a hub hands it to its local sockets of one group.

    Its items are the event's and are never written: every socket of the group
    on this worker reads this one object. What is worked out from the event
    once per worker rather than once per socket (that is what makes fan-out
    cheap, docs/architecture.md) travels beside the items, not among them:
    the client frame as JSON text (`encoded`), as WebSocket frame bytes
    (`frame`, filled by realtime.delivery) and anything else a consumer
    derives (`once`). A dict, so a subscriber reads it as the event itself.
    """

    __slots__ = ("_derived", "frame", "text")

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__(event)
        self.text: str | None = None
        self.frame: bytes | None = None
        self._derived: dict[Callable[..., Any], Any] | None = None

    def encoded(self, build: Callable[[dict[str, Any]], dict[str, Any]]) -> str:
        """The client frame `build(self)` as JSON text, encoded by the first socket that needs it.

        One event has one client frame: every consumer of a group builds it the same way.
        """
        text = self.text
        if text is None:
            text = self.text = encode(build(self))
        return text

    def once(self, make: Callable[[LocalEvent], T]) -> T:
        """`make(self)`, worked out by the first socket that asks and kept for the others."""
        derived = self._derived
        if derived is None:
            derived = self._derived = {}
        if make not in derived:
            derived[make] = make(self)
        return derived[make]
