"""The latest value and `seq` of every live topic: one Redis hash per topic.

A publish is one Lua script call that raises the topic's `seq` by one and
stores the value together (`HINCRBY` and `HSET` in one atomic step), so two
workers publishing the same topic at once get consecutive `seq`s, never the
same one and never a gap, and a reader never sees a `seq` with another
publish's value. Keys are `LIVE_KEY_PREFIX:<namespace>:<topic name>` with
fields `s` (seq), `d` (the value as JSON text) and `e` (the epoch: Redis'
clock in microseconds when the key was made). Keys do not expire: a topic
holds its latest value until Redis loses it. Should that happen (a Redis
restart without persistence), `seq` starts again from 1 under a newer epoch;
sockets order values by (epoch, seq), so the new values still reach them.

Without Redis, the values live in this process (development: one process).
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from typing import Any

import orjson
from django.conf import settings

from realtime import redis_client
from realtime.adapter import wire
from realtime.protocol import ServerFrame

# KEYS[1]: the topic's hash. ARGV[1]: the value as JSON text. Reply: {epoch, seq}.
_PUBLISH = """
local key = KEYS[1]
local seq = redis.call('HINCRBY', key, 's', 1)
local epoch = redis.call('HGET', key, 'e')
if not epoch then
  local t = redis.call('TIME')
  epoch = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('HSET', key, 'e', epoch)
end
redis.call('HSET', key, 'd', ARGV[1])
return {epoch, seq}
"""
_FIELDS = ("e", "s", "d")


class Value:
    """One value of one topic, as a worker holds it: shared by all of the worker's sockets.

    `data` is the JSON text as published, put into frames as it is, so a
    value is encoded once when published and framed once per worker.
    """

    __slots__ = ("_frame", "_size", "_text", "data", "epoch", "seq", "topic")

    def __init__(self, topic: str, epoch: int, seq: int | None, data: str) -> None:
        self.topic = topic
        self.epoch = epoch
        self.seq = seq
        self.data = data
        self._text: str | None = None
        self._frame: bytes | None = None
        self._size = 0

    @property
    def order(self) -> tuple[int, int]:
        return (self.epoch, self.seq or 0)

    def newer_than(self, other: Value | None) -> bool:
        return other is None or self.order > other.order

    def text(self, kind: ServerFrame) -> str:
        """The `subscribed` or `update` frame carrying this value."""
        if kind == ServerFrame.UPDATE and self._text is not None:
            return self._text
        seq = "null" if self.seq is None else str(self.seq)
        topic = orjson.dumps(self.topic).decode()
        text = f'{{"type":"{kind}","topic":{topic},"seq":{seq},"data":{self.data}}}'
        if kind == ServerFrame.UPDATE:
            self._text = text
        return text

    def update_frame(self) -> bytes:
        """The `update` frame as WebSocket bytes, built once for every socket of the worker."""
        if self._frame is None:
            self._frame = wire.text_frame(self.text(ServerFrame.UPDATE))
        return self._frame

    def size(self) -> int:
        """Bytes of a frame carrying this value, at most (the frame's head and fields around the data)."""
        if not self._size:
            self._size = len(self.data.encode()) + len(self.topic) + 80
        return self._size


def never_published(topic: str) -> Value:
    return Value(topic, 0, None, "null")


def key(name: str) -> str:
    return f"{redis_client.namespaced(settings.LIVE_KEY_PREFIX)}:{name}"


def _value(name: str, fields: list[Any]) -> Value:
    epoch, seq, data = fields
    if seq is None or data is None:
        return never_published(name)
    return Value(name, int(epoch or 0), int(seq), data.decode() if isinstance(data, bytes) else data)


def _published(name: str, data: str, reply: list[Any]) -> Value:
    return Value(name, int(reply[0]), int(reply[1]), data)


class _Memory:
    """The values in this process, when there is no Redis."""

    def __init__(self) -> None:
        self.values: dict[str, Value] = {}
        self.lock = threading.Lock()
        self.epoch = time.time_ns() // 1000

    def publish(self, name: str, data: str) -> Value:
        with self.lock:
            previous = self.values.get(name)
            value = Value(name, self.epoch, (previous.seq if previous else 0) + 1, data)
            self.values[name] = value
            return value

    def read(self, names: list[str]) -> list[Value]:
        with self.lock:
            return [self.values.get(name) or never_published(name) for name in names]


_memory = _Memory()
_sync: Any = None
_sync_lock = threading.Lock()


def _sync_client() -> Any:
    global _sync
    with _sync_lock:
        if _sync is None:
            _sync = redis_client.sync_client()
            _sync.live_publish = _sync.register_script(_PUBLISH)
        return _sync


def publish(name: str, data: str) -> Value:
    """Store `data` (JSON text) as the latest value of `name`; its Value with the new seq."""
    if not redis_client.configured():
        return _memory.publish(name, data)
    client = _sync_client()
    return _published(name, data, client.live_publish(keys=[key(name)], args=[data]))


def read(names: list[str]) -> list[Value]:
    """The latest value of each topic (one round trip whatever the number)."""
    if not redis_client.configured():
        return _memory.read(names)
    pipe = _sync_client().pipeline(transaction=False)
    for name in names:
        pipe.hmget(key(name), _FIELDS)
    return [_value(name, fields) for name, fields in zip(names, pipe.execute(), strict=True)]


class AsyncStore:
    """`publish` and `read` for socket handlers, on the running event loop's connections."""

    def __init__(self) -> None:
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = redis_client.async_client(
                max_connections=settings.LIVE_REDIS_CONNECTIONS, wait_seconds=settings.REDIS_SOCKET_TIMEOUT
            )
            client.live_publish = client.register_script(_PUBLISH)
        return client

    async def publish(self, name: str, data: str) -> Value:
        if not redis_client.configured():
            return _memory.publish(name, data)
        reply = await self._client().live_publish(keys=[key(name)], args=[data])
        return _published(name, data, reply)

    async def read(self, names: list[str]) -> list[Value]:
        if not redis_client.configured():
            return _memory.read(names)
        pipe = self._client().pipeline(transaction=False)
        for name in names:
            pipe.hmget(key(name), _FIELDS)
        replies = await pipe.execute()
        return [_value(name, fields) for name, fields in zip(names, replies, strict=True)]

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose(close_connection_pool=True)
