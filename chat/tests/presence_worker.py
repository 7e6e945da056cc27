"""A second worker process for the cross-process presence test.

Run as `python -m chat.tests.presence_worker PATH` with the test's database,
Redis and key prefixes in the environment and a session key in
WORKER_SESSION_COOKIE. It opens one chat socket through its own copy of the
ASGI application, prints the welcome's online list as JSON, waits for a line
on stdin, closes the socket and prints "closed".
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()


async def main(path: str) -> None:
    from channels.testing import WebsocketCommunicator
    from django.conf import settings

    from config.asgi import application

    cookie = f"{settings.SESSION_COOKIE_NAME}={os.environ['WORKER_SESSION_COOKIE']}"
    socket = WebsocketCommunicator(
        application, path, headers=[(b"origin", b"http://localhost:8000"), (b"cookie", cookie.encode())]
    )
    connected, _ = await socket.connect(timeout=20)
    assert connected
    welcome = await socket.receive_json_from(timeout=20)
    print(json.dumps(welcome.get("online")), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await socket.disconnect()
    print("closed", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
