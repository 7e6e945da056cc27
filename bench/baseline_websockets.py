"""Baseline (b): a plain `websockets` broadcast server in one Python process.

Every socket on a path is in that path's room; a text frame `{"message": ...}`
is re-encoded once and sent to the whole room with `websockets.broadcast`.
Run as `python -m bench.baseline_websockets --port PORT` (loopback only).

On `/ws/ticker/` it speaks the ticker workload's frames instead: `subscribe`
(one `subscribed` per topic), and `publish` (from `bench.ticker_publish websockets`),
which goes to the topic's subscribers with one `websockets.broadcast`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import defaultdict

from websockets import broadcast
from websockets.asyncio.server import serve

ROOMS: dict[str, set] = defaultdict(set)
TOPICS: dict[str, set] = defaultdict(set)
SEQ: dict[str, int] = defaultdict(int)


async def ticker(websocket) -> None:
    mine: list[str] = []
    try:
        async for text in websocket:
            frame = json.loads(text)
            if frame["type"] == "publish":
                topic = frame["topic"]
                SEQ[topic] += 1
                update = {"type": "update", "topic": topic, "seq": SEQ[topic], "data": frame["data"]}
                broadcast(TOPICS[topic], json.dumps(update))
            elif frame["type"] == "subscribe":
                for topic in frame["topics"]:
                    TOPICS[topic].add(websocket)
                    mine.append(topic)
                    await websocket.send(
                        json.dumps({"type": "subscribed", "topic": topic, "seq": None, "data": None})
                    )
    finally:
        for topic in mine:
            TOPICS[topic].discard(websocket)


async def handler(websocket) -> None:
    if websocket.request.path == "/ws/ticker/":
        await ticker(websocket)
        return
    room = ROOMS[websocket.request.path]
    room.add(websocket)
    try:
        async for text in websocket:
            message = json.loads(text)["message"]
            broadcast(room, json.dumps({"message": message}))
    finally:
        room.discard(websocket)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, max_queue=None, ping_interval=None) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
