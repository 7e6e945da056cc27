"""A client that stops reading is cut off once its unread backlog passes WS_MAX_BUFFER_BYTES."""

from __future__ import annotations

import asyncio
import base64
import os
import socket

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from notifications import services
from realtime.launcher import SERVERS, Worker
from testsupport.asgi import ORIGIN
from testsupport.auth import session_cookie
from testsupport.processes import subprocess_env
from testsupport.servers import browser_socket, receive_json

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def open_without_reading(port: int, cookie: str) -> socket.socket:
    """A WebSocket handshake over a plain socket with a tiny receive window; then it never reads."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.settimeout(10)
    raw.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            "GET /ws/notifications/ HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {ORIGIN}\r\nCookie: {settings.SESSION_COOKIE_NAME}={cookie}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return raw


def read_until_closed(raw: socket.socket) -> int:
    """Everything the server still delivers; returns the byte count once the connection ends."""
    total = 0
    try:
        while chunk := raw.recv(65536):
            total += len(chunk)
    except ConnectionResetError:
        pass
    return total


@pytest.mark.parametrize("server", list(SERVERS))
async def test_a_client_that_never_reads_is_cut_off_and_others_keep_receiving(server, alice, bob, tmp_path):
    """Its backlog is bounded: the worker drops it, stays up, and other sockets still get pushes."""
    env = subprocess_env() | {"WS_MAX_BUFFER_BYTES": "262144"}
    worker = Worker(server, env=env, log_path=tmp_path / "worker.log")
    port = worker.port
    try:
        await worker.astart()
        cookie = await sync_to_async(session_cookie)(alice)
        raw = await asyncio.to_thread(open_without_reading, port, cookie)
        control = await browser_socket(f"ws://127.0.0.1:{port}/ws/notifications/", bob)
        await receive_json(control, "welcome")
        big = "x" * 50_000
        sent = 0
        # 10 MB for Alice, far past the 256 KiB limit and the kernel's buffers.
        for i in range(200):
            await sync_to_async(services.notify)(users=alice, title=f"n{i}", body=big)
            sent += len(big)
        got = await asyncio.to_thread(read_until_closed, raw)
        raw.close()
        assert got < sent, "the connection was never cut: everything was buffered"
        await sync_to_async(services.notify)(users=bob, title="still serving")
        frame = await receive_json(control, "notification")
        assert frame["notification"]["title"] == "still serving"
        await control.close()
    finally:
        from django.db import connections

        await sync_to_async(connections.close_all)()  # this test's thread, so the database can go
        await worker.astop()
    assert "event=slow_client_dropped" in worker.log()
