"""Under each real server, fan-out takes the pre-framed path and clients see each item once, in order.

The consumer tests elsewhere run through `WebsocketCommunicator`, which has
no connection to write to, so they exercise the ASGI fallback. These start
the project under daphne, the `realtime.serve` launcher and uvicorn's two
`websockets` implementations, and check what clients see plus the worker's
`relay_frames_direct_total` (so a server the fast path stopped recognising
fails here rather than silently falling back).
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

from chat.models import Message
from notifications import services as notification_services
from realtime.launcher import SERVERS, Worker, http_get
from testsupport.processes import subprocess_env
from testsupport.servers import browser_socket

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

POSTS = 30


async def next_of(ws, kind: str, wait: float = 10.0) -> dict:
    """The next frame of type `kind`, passing over presence and typing news."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), wait))
        if frame["type"] == kind:
            return frame
        assert frame["type"] in ("presence", "typing"), frame


def direct_frames(metrics: str, endpoint: str) -> float:
    match = re.search(rf'^relay_frames_direct_total{{endpoint="{endpoint}"}} (\S+)$', metrics, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize("server", list(SERVERS))
async def test_room_and_inbox_pushes_arrive_once_in_order_on_the_fast_path(
    server, alice, bob, carol, lobby, tmp_path
):
    """Three members see all 30 posts in order, typing reaches the others, Alice's inbox its pushes."""
    env = subprocess_env() | {
        "PRESENCE_KEY_PREFIX": settings.PRESENCE_KEY_PREFIX,
        "CHAT_RATE_KEY_PREFIX": settings.CHAT_RATE_KEY_PREFIX,
        "CHAT_RATE_PER_SECOND": "1000",
        "CHAT_RATE_BURST": "1000",
    }
    worker = Worker(server, env=env, log_path=tmp_path / "server.log")
    port = worker.port
    sockets = []
    try:
        await worker.astart()
        room_url = f"ws://127.0.0.1:{port}/ws/chat/lobby/"
        for user in (alice, bob, carol):
            ws = await browser_socket(room_url, user)
            sockets.append(ws)
            await next_of(ws, "welcome")
        inbox = await browser_socket(f"ws://127.0.0.1:{port}/ws/notifications/", alice)
        sockets.append(inbox)
        await next_of(inbox, "welcome")
        poster = sockets[0]

        for n in range(POSTS):
            await poster.send(json.dumps({"type": "message", "body": f"m{n}", "client_id": f"c{n}"}))
        for n in range(3):
            await sync_to_async(notification_services.notify)(users=alice, title=f"n{n}")

        seen = [[(await next_of(ws, "message"))["message"] for _ in range(POSTS)] for ws in sockets[:3]]
        stored = [m.id async for m in Message.objects.filter(room=lobby).order_by("id")]
        for frames in seen:
            assert [m["id"] for m in frames] == stored
            assert [m["body"] for m in frames] == [f"m{n}" for n in range(POSTS)]
        await sockets[1].send(json.dumps({"type": "typing"}))
        for ws in (sockets[0], sockets[2]):
            assert (await next_of(ws, "typing"))["user"] == bob.username
        titles = [(await next_of(inbox, "notification"))["notification"]["title"] for _ in range(3)]
        assert titles == ["n0", "n1", "n2"]

        status, metrics = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert direct_frames(metrics, "chat") >= 3 * POSTS
        assert direct_frames(metrics, "notifications") >= 3
    finally:
        for ws in sockets:
            await ws.close()
        await sync_to_async(connections.close_all)()  # this test's thread, so the database can go
        await worker.astop()
    output = worker.log()
    assert "Traceback" not in output, output
