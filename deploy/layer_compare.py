#!/usr/bin/env python3
"""RedisChannelLayer vs RedisPubSubChannelLayer: group_send to many members, measured.

    python deploy/layer_compare.py [--redis redis://127.0.0.1:6379/7] [--members 1000] [--messages 20]

One process plays a worker with `--members` sockets (one channel each, every
one awaiting `receive` like a consumer does), in two patterns: all in one
group (a big chat room: one group_send), and each in its own group (a
notification to every user: one group_send per user, 64 at a time as
realtime.fanout.push sends them). For each backend and pattern:

- fan-out latency: one group_send at a time, from the call to the moment the
  last member has the message (median and p95 over `--messages` sends);
- send: how long the sending call(s) take;
- burst throughput: `--messages` group_sends at once, deliveries per second
  until every member has every message.

Results are printed as a table and as JSON (the README quotes them). Runs
against a local Redis only, under its own key prefix, and flushes it after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid

BACKENDS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}


def make_layer(backend: str, redis_url: str, members: int, messages: int):
    module, _, name = BACKENDS[backend].rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    prefix = f"layer-compare-{uuid.uuid4().hex[:8]}"
    if backend == "core":
        # All channels of one process share one Redis key, and `capacity` bounds
        # that key: pending messages for *all* the process's sockets together.
        # Large enough here that nothing is dropped, so speed is what we measure.
        return cls(hosts=[redis_url], prefix=prefix, capacity=members * messages * 2 + 100, expiry=60)
    return cls(hosts=[redis_url], prefix=prefix)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def measure(
    backend: str, redis_url: str, members: int, messages: int, wait: float, per_user: bool
) -> dict:
    layer = make_layer(backend, redis_url, members, messages)
    channels = [await layer.new_channel() for _ in range(members)]
    # one-group: a chat room with `members` sockets. per-user: `notify(everyone=True)`
    # to `members` users with one socket each, i.e. one group_send per user group.
    groups = [f"user.{i}" for i in range(members)] if per_user else ["compare"]
    for i, channel in enumerate(channels):
        await layer.group_add(groups[i] if per_user else groups[0], channel)
    gate = asyncio.Semaphore(64)  # as realtime.fanout.push does

    async def send(seq: int) -> None:
        async def one(group: str) -> None:
            async with gate:
                await layer.group_send(group, {"type": "compare.message", "seq": seq})

        await asyncio.gather(*(one(group) for group in groups))

    expected = messages * 2  # sequential round, then the burst
    received: dict[int, int] = {}
    done: dict[int, asyncio.Event] = {seq: asyncio.Event() for seq in range(expected)}
    finished_at: dict[int, float] = {}

    async def member(channel: str) -> None:
        for _ in range(expected):
            message = await layer.receive(channel)
            seq = message["seq"]
            received[seq] = received.get(seq, 0) + 1
            if received[seq] == members:
                finished_at[seq] = time.perf_counter()
                done[seq].set()

    tasks = [asyncio.ensure_future(member(channel)) for channel in channels]
    await asyncio.sleep(0)  # let every member start waiting before the first send
    try:
        latencies, send_times = [], []
        for seq in range(messages):
            started = time.perf_counter()
            await send(seq)
            send_times.append(time.perf_counter() - started)
            await asyncio.wait_for(done[seq].wait(), wait)
            latencies.append(finished_at[seq] - started)

        started = time.perf_counter()
        await asyncio.gather(*(send(seq) for seq in range(messages, expected)))
        await asyncio.wait_for(asyncio.gather(*(done[s].wait() for s in range(messages, expected))), wait)
        burst = time.perf_counter() - started
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await layer.flush()
    return {
        "backend": backend,
        "pattern": "per-user" if per_user else "one-group",
        "members": members,
        "messages": messages,
        "fanout_ms_median": round(statistics.median(latencies) * 1000, 2),
        "fanout_ms_p95": round(percentile(latencies, 0.95) * 1000, 2),
        "send_ms_median": round(statistics.median(send_times) * 1000, 2),
        "burst_deliveries_per_s": round(members * messages / burst),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument(
        "--per-user-messages",
        type=int,
        default=5,
        help="rounds in the per-user pattern (each is --members sends)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="per wait, so a stuck run ends")
    parser.add_argument("--backends", default="core,pubsub")
    args = parser.parse_args()
    results = []
    rounds = {False: args.messages, True: args.per_user_messages}
    for per_user in (False, True):
        for backend in args.backends.split(","):
            results.append(
                asyncio.run(
                    measure(backend, args.redis, args.members, rounds[per_user], args.timeout, per_user)
                )
            )
    columns = list(results[0])
    print(" | ".join(columns))
    for row in results:
        print(" | ".join(str(row[c]) for c in columns), flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
