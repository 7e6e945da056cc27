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
5. Channels asked for together are subscribed with one SUBSCRIBE. Upstream
   sends one command per channel, one at a time under the lock: in a
   handshake storm (every socket's user group is a new channel) that was 9 %
   of a uvicorn worker's CPU (py-spy, 2,000 sockets connecting), and each
   handshake waited for all the SUBSCRIBEs queued before its own. Each caller
   still returns once its channel's SUBSCRIBE is sent, as upstream's does.

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
        self._subscribes = Batched(self._subscribe_many)
        # Failed reads in the current outage (0 while Redis answers).
        self.receive_failures = 0
        self._failing_since = 0.0

    async def publish(self, channel, message) -> None:
        async with self._publish_lock:  # not self._lock: see the module docstring, 1.
            self._ensure_redis()  # synchronous: no other task runs between its check and its set
            await self._redis.publish(channel, message)

    async def subscribe(self, channel) -> None:
        # See the module docstring, 5. Whether the channel is subscribed already is asked under
        # the lock only: an UNSUBSCRIBE of it may be queued there (its group's last socket just
        # closed), and this SUBSCRIBE must come after it, or the group is left unsubscribed.
        await self._subscribes(channel)

    async def _subscribe_many(self, channels: list) -> list[None]:
        async with self._lock:
            fresh = [channel for channel in dict.fromkeys(channels) if channel not in self._subscribed_to]
            if fresh:
                self._ensure_redis()
                self._ensure_receiver()
                await self._pubsub.subscribe(*fresh)
                self._subscribed_to.update(fresh)
        return [None] * len(channels)

    async def unsubscribe(self, channel) -> None:
        # Upstream's, plus the except clause: see the module docstring, 3.
        async with self._lock:
            if channel not in self._subscribed_to:
                return
            self._subscribed_to.remove(channel)
            self._ensure_redis()
            self._ensure_receiver()
            try:
                await self._pubsub.unsubscribe(channel)
            except BaseException as exc:
                # Not confirmed, so redis-py still counts it as subscribed.
                # Its connection is broken (the server forgot the channel with
                # it) or this was cancelled; either way, drop it there too.
                encoder = self._pubsub.encoder
                name = encoder.decode(encoder.encode(channel))
                self._pubsub.channels.pop(name, None)
                self._pubsub.pending_unsubscribe_channels.discard(name)
                if not isinstance(exc, (RedisError, OSError)):
                    raise
                logger.debug("channel layer: unsubscribed %s while Redis is unreachable", channel)

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
