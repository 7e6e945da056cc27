"""Baseline (b): a plain `websockets` broadcast server in one Python process.

Every socket on a path is in that path's room; a text frame `{"message": ...}`
is re-encoded once and sent to the whole room with `websockets.broadcast`.
Run as `python -m bench.baseline_websockets --port PORT` (loopback only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import defaultdict

from websockets import broadcast
from websockets.asyncio.server import serve

ROOMS: dict[str, set] = defaultdict(set)


async def handler(websocket) -> None:
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
