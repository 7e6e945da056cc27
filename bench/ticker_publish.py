"""The ticker workload's publisher, a process of its own: `python -m bench.ticker_publish KIND ...`.

declare                                   declare the public topic prefix `ticker.` (the service)
service RATE SECONDS TOPICS               `live.services.publish_topic` from a pool of threads,
                                          as any Django code publishes (contract: "Pushing from Django code")
channels RATE SECONDS TOPICS              one `group_send` per value to the topic's group (the plain
                                          Channels baseline, bench/baseline_channels.py)
websockets RATE SECONDS TOPICS URL        one `publish` frame per value to the websockets baseline

Publish k goes to topic k % TOPICS at t0 + k / RATE; its value is {"t": time.monotonic_ns()}
taken just before the call. Prints one JSON object: the first and last call times, the
values published and the rate achieved, and the call duration p50 / p99.

A Django process calling publish_topic is what sustains 1,000 values a second on two cores:
the publish API (`POST /api/publish/topics/<name>/`) would put an HTTP request, an API key
check and a Django view per value on the worker being measured.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from bench.stats import percentile
from bench.ticker_client import TOPIC_PREFIX, ticker_group, topic_name

IN_FLIGHT = 16  # publishes under way at once: a slow call must not hold the schedule
THREADS = 4  # the service's publish_topic is sync: this many calls at once


def setup_django() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()


async def paced(rate: float, seconds: float, topics: int, call: Callable[[str], Awaitable[None]]) -> dict:
    """Publish rate * seconds values on schedule (late ones go at once) and time each call."""
    total = int(rate * seconds)
    durations: list[int] = []
    gate = asyncio.Semaphore(IN_FLIGHT)
    tasks = []

    async def one(k: int) -> None:
        try:
            started = time.monotonic_ns()
            await call(topic_name(k % topics))
            durations.append(time.monotonic_ns() - started)
        finally:
            gate.release()

    print("ready", flush=True)  # the parent times the slow subscribers' pause from here
    t0 = time.monotonic_ns()
    for k in range(total):
        delay = (t0 + k * 1e9 / rate - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        tasks.append(asyncio.ensure_future(one(k)))
    await asyncio.gather(*tasks)
    t_last = time.monotonic_ns()
    durations.sort()
    span = (t_last - t0) / 1e9
    return {
        "t_first": t0,
        "t_last": t_last,
        "published": len(durations),
        "asked_rate": rate,
        "achieved_rate": round(len(durations) / span, 1) if span > 0 else 0.0,
        "call_p50_ms": round(percentile(durations, 0.50) / 1e6, 3),
        "call_p99_ms": round(percentile(durations, 0.99) / 1e6, 3),
    }


async def service(rate: float, seconds: float, topics: int) -> dict:
    setup_django()
    from live.services import publish_topic

    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(THREADS)

    def publish(name: str) -> None:
        publish_topic(name, {"t": time.monotonic_ns()})

    async def call(name: str) -> None:
        await loop.run_in_executor(pool, publish, name)

    return {
        "how": f"live.services.publish_topic from {THREADS} threads",
        **await paced(rate, seconds, topics, call),
    }


async def channels(rate: float, seconds: float, topics: int) -> dict:
    setup_django()
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    seq: dict[str, int] = {}

    async def call(name: str) -> None:
        seq[name] = seq.get(name, 0) + 1
        event = {"type": "ticker.value", "topic": name, "seq": seq[name], "data": {"t": time.monotonic_ns()}}
        await layer.group_send(ticker_group(name), event)

    return {"how": "channel_layer.group_send", **await paced(rate, seconds, topics, call)}


async def websockets_(rate: float, seconds: float, topics: int, url: str) -> dict:
    from websockets.asyncio.client import connect

    async with connect(url, max_queue=None, ping_interval=None) as ws:

        async def call(name: str) -> None:
            frame = {"type": "publish", "topic": name, "data": {"t": time.monotonic_ns()}}
            await ws.send(json.dumps(frame))

        return {"how": "publish frames, websockets.broadcast", **await paced(rate, seconds, topics, call)}


def declare() -> dict:
    setup_django()
    from live.models import Topic
    from live.services import declare_topic

    declare_topic(name=TOPIC_PREFIX, match=Topic.Match.PREFIX, read=Topic.Read.PUBLIC, max_bytes=1024)
    return {"declared": TOPIC_PREFIX}


def main(argv: list[str]) -> dict:
    kind, args = argv[0], argv[1:]
    if kind == "declare":
        return declare()
    rate, seconds, topics = float(args[0]), float(args[1]), int(args[2])
    if kind == "service":
        return asyncio.run(service(rate, seconds, topics))
    if kind == "channels":
        return asyncio.run(channels(rate, seconds, topics))
    if kind == "websockets":
        return asyncio.run(websockets_(rate, seconds, topics, args[3]))
    raise SystemExit(f"unknown publisher {kind}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])), flush=True)
