"""channels_redis's pub/sub layer with five changes of ours (CHANNEL_LAYER_BACKEND=pubsub).

channels_redis 4.3.0 (pinned in requirements.txt) has, per Redis host, one
`RedisSingleShardConnection` and one `asyncio.Lock`. The subclasses below
change only what is listed here; everything else is upstream's code.

1. Publishing no longer takes the lock that SUBSCRIBE and UNSUBSCRIBE take.
   Upstream holds that lock for the whole PUBLISH round trip, although PUBLISH
   goes over a pooled connection of its own. With Redis frozen (SIGSTOP, a
   stalled host) a PUBLISH waits for the socket timeout (REDIS_SOCKET_TIMEOUT,
   15 s by default), and every subscribe queued behind it: Channels subscribes
   a channel for each new socket before the consumer even sees `connect`, so
   every handshake on the worker stalled, daphne dropped them after its 5 s
   handshake limit, and closing sockets could not unsubscribe. Publishes still
   go one at a time, in order, as upstream sends them (now behind a lock of
   their own), so message order and throughput are as before.
2. A channel whose SUBSCRIBE fails (Redis down) or is cancelled is forgotten.
   Upstream keeps its receive queue forever, one per refused handshake while
   Redis is down.
3. A channel unsubscribed while Redis is unreachable (a socket closing
   during an outage) is forgotten, quietly. Upstream logged an ERROR with a
   traceback per socket and kept the channel in its own set and in redis-py's,
   which subscribed it again on the next connection: one subscription leaked
   per socket closed during each outage, for the life of the worker.
4. The receive task logs one warning when Redis stops answering and one info
   line when it answers again, instead of "Unexpected exception in receive
   task" with a traceback every second of the outage. It also keeps retrying
   on a builtin `TimeoutError`, which upstream re-raises (it was once the
   spelling of cancellation), ending the task that feeds every channel of
   the worker for good.
5. Channels asked for together are subscribed with one SUBSCRIBE, and
   unsubscribed with one UNSUBSCRIBE. Upstream sends one command per
   channel, one at a time under the lock. In a handshake storm (every
   socket's user group is a new channel) the SUBSCRIBEs were 9 % of a uvicorn
   worker's CPU (py-spy, 2,000 sockets connecting), and each handshake waited
   for all the SUBSCRIBEs queued before its own. After a Redis restart the
   UNSUBSCRIBEs of the 5,000 sockets a worker had just closed came first: the
   returning clients' SUBSCRIBEs queued behind 5,000 round trips (`python -m
   bench reconnect`, 10,000 clients: handshakes waited there for tens of
   seconds while the workers' CPU was two-thirds idle). Both kinds go through
   one queue in the order asked, so a channel unsubscribed and subscribed
   again (its group's last socket left and a new one came) stays subscribed.
   Each caller still returns once its command is sent, as upstream's does.

If any upstream internal these rely on is gone (`realtime.adapter.internals`,
"channels_redis"), one warning names it and the layer runs as upstream ships it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, RedisSingleShardConnection
from channels_redis.utils import _wrap_close
from redis.exceptions import RedisError

from realtime.adapter import internals
from realtime.batching import Batched

logger = logging.getLogger("realtime.layer")

# Upstream's pause between two failed reads of the subscriber connection.
RECEIVE_RETRY_SECONDS = 1.0


class _Shard(RedisSingleShardConnection):
    def __init__(self, host, channel_layer) -> None:
        super().__init__(host, channel_layer)
        self._publish_lock = asyncio.Lock()
        self._changes = Batched(self._change_many)
        # Failed reads in the current outage (0 while Redis answers).
        self.receive_failures = 0
        self._failing_since = 0.0

    async def publish(self, channel, message) -> None:
        async with self._publish_lock:  # not self._lock: see the module docstring, 1.
            self._ensure_redis()  # synchronous: no other task runs between its check and its set
            await self._redis.publish(channel, message)

    async def subscribe(self, channel) -> None:
        # See the module docstring, 5.
        await self._changes((channel, True))

    async def unsubscribe(self, channel) -> None:
        # See the module docstring, 3 and 5.
        await self._changes((channel, False))

    async def _change_many(self, changes: list[tuple[str, bool]]) -> list[BaseException | None]:
        """SUBSCRIBE and UNSUBSCRIBE what the changes, taken in the order they were asked, add up to.

        Whether a channel is subscribed is asked under the lock only, and one queue takes both
        kinds in order: a subscribe asked after an unsubscribe of the same channel (its group's
        last socket left and a new one came) must leave it subscribed.
        """
        wanted = dict(changes)  # the last change asked of each channel wins
        async with self._lock:
            leave = [channel for channel, on in wanted.items() if not on and channel in self._subscribed_to]
            join = [channel for channel, on in wanted.items() if on and channel not in self._subscribed_to]
            if leave:
                self._subscribed_to.difference_update(leave)
                await self._unsubscribe_now(leave)
            failed: BaseException | None = None
            if join:
                try:
                    self._ensure_redis()
                    self._ensure_receiver()
                    await self._pubsub.subscribe(*join)
                except Exception as exc:
                    failed = exc  # to the subscribers alone; an unsubscribe is done either way
                else:
                    self._subscribed_to.update(join)
        return [failed if on else None for _, on in changes]

    async def _unsubscribe_now(self, channels: list) -> None:
        self._ensure_redis()
        self._ensure_receiver()
        try:
            await self._pubsub.unsubscribe(*channels)
        except BaseException as exc:
            # Not confirmed, so redis-py still counts them as subscribed. Its connection is
            # broken (the server forgot them with it) or this was cancelled; either way, drop
            # them there too.
            encoder = self._pubsub.encoder
            for channel in channels:
                name = encoder.decode(encoder.encode(channel))
                self._pubsub.channels.pop(name, None)
                self._pubsub.pending_unsubscribe_channels.discard(name)
            if not isinstance(exc, (RedisError, OSError)):
                raise
            logger.debug("channel layer: unsubscribed %d channels while Redis is unreachable", len(channels))

    async def _do_receiving(self) -> None:
        # Upstream's loop (channels_redis/pubsub.py), logging changed: see the module docstring, 4.
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                    if self.receive_failures:
                        self._recovered()
                    self._receive_message(message)
                else:
                    await asyncio.sleep(0.1)
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as exc:
                self._failed(exc)
                await asyncio.sleep(RECEIVE_RETRY_SECONDS)

    def _failed(self, exc: Exception) -> None:
        self.receive_failures += 1
        if self.receive_failures == 1:
            self._failing_since = time.monotonic()
            logger.warning(
                "channel layer: reading from Redis failed (%s: %s); retrying every %.0f s, "
                "quiet until it answers again",
                type(exc).__name__,
                exc,
                RECEIVE_RETRY_SECONDS,
            )

    def _recovered(self) -> None:
        logger.info(
            "channel layer: reading from Redis again after %.1f s (%d failed reads)",
            time.monotonic() - self._failing_since,
            self.receive_failures,
        )
        self.receive_failures = 0


class _LoopLayer(RedisPubSubLoopLayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._shards = [_Shard(shard.host, self) for shard in self._shards]

    async def _subscribe_to_channel(self, channel) -> None:
        try:
            await super()._subscribe_to_channel(channel)
        except BaseException:
            # See the module docstring, 2. (Upstream adds the queue first.)
            self.channels.pop(channel, None)
            raise


class RelayPubSubChannelLayer(RedisPubSubChannelLayer):
    """`RedisPubSubChannelLayer` whose per-loop layers are `_LoopLayer`s."""

    def receive_ready(self, channel: str, limit: int) -> list[dict]:
        """Up to `limit` messages already waiting on `channel`, without waiting.

        The hub takes a backlog in one round, so a socket gets the frames of
        several events in one write (see Hub._receive_loop).
        """
        if not internals.check("channels_redis"):
            return []
        queue = self._get_layer().channels.get(channel)
        ready = []
        while queue is not None and len(ready) < limit and not queue.empty():
            ready.append(self.deserialize(queue.get_nowait()))
        return ready

    # What this process's layer holds, for tests and tools that look at Redis beside it.
    def group_channel(self, group: str) -> str:
        """The Redis channel `group`'s messages are published on."""
        return self._get_layer()._get_group_channel_name(group)

    def channel_pattern(self) -> str:
        """A PUBSUB CHANNELS pattern matching every channel of this layer."""
        return f"{self._get_layer().prefix}*"

    def local_channels(self) -> set[str]:
        """The channels this process receives on (each with its queue)."""
        return set(self._get_layer().channels)

    def receive_failures(self) -> int:
        """Failed reads of the subscriber connections in the current outage (0 while Redis answers)."""
        return sum(getattr(shard, "receive_failures", 0) for shard in self._get_layer()._shards)

    def _get_layer(self):
        # Upstream's _get_layer, building our loop layer instead of its own.
        if not internals.check("channels_redis"):
            return super()._get_layer()
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = self._layers[loop] = _LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)
            return layer
