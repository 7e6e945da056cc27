"""A dependency internal the adapter needs is gone: one warning names it, events still arrive, and
a full handshake queue still refuses sockets without a traceback.

The worker is plain daphne started by a few lines that first move Twisted's
`FileDescriptor.dataBuffer` (what the slow-client limit and the pre-framed
writer read) down to `tcp.Connection`: Twisted still works, but the name is no
longer where the adapter looks, as after a rename upstream. Before the start-up
check, the adapter went on reading it through getattr defaults, and the
slow-client limit quietly read 0 bytes buffered.
"""

from __future__ import annotations

import asyncio
import re
import sys

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from notifications import services as notification_services
from realtime.launcher import APP, Worker, http_get
from testsupport.handshakes import credentials_locked, until_in_progress
from testsupport.processes import subprocess_env
from testsupport.servers import browser_opening, browser_socket, receive_json

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

MISSING = "twisted.internet.abstract:FileDescriptor.dataBuffer"

# `python -c` this, then daphne's own arguments: daphne with the internal moved.
DAPHNE_WITHOUT_INTERNAL = """
import runpy
import daphne.server  # installs Twisted's asyncio reactor first, as `python -m daphne` does
from twisted.internet import abstract, tcp
tcp.Connection.dataBuffer = abstract.FileDescriptor.dataBuffer
del abstract.FileDescriptor.dataBuffer
runpy.run_module("daphne", run_name="__main__", alter_sys=True)
"""


async def test_a_missing_internal_is_named_once_and_pushes_still_arrive_over_plain_asgi(alice, tmp_path):
    """Without a Twisted internal: one warning naming it, a notification still reaches the socket."""
    argv = [sys.executable, "-c", DAPHNE_WITHOUT_INTERNAL, "-b", "127.0.0.1", "-p", "{port}", APP]
    worker = Worker(argv=argv, name="daphne", env=subprocess_env(), log_path=tmp_path / "server.log")
    port = worker.port
    inbox = None
    try:
        await worker.astart()
        inbox = await browser_socket(f"ws://127.0.0.1:{port}/ws/notifications/", alice)
        await receive_json(inbox, "welcome")
        await sync_to_async(notification_services.notify)(users=alice, title="still here")
        frame = await receive_json(inbox, "notification")
        assert frame["notification"]["title"] == "still here"
        status, metrics = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        # Plain ASGI sends: the pre-framed writer is off.
        assert not re.search(r'^relay_frames_direct_total\{endpoint="notifications"\} [1-9]', metrics, re.M)
    finally:
        if inbox is not None:
            await inbox.close()
        await sync_to_async(connections.close_all)()  # this test's thread, so the database can go
        await worker.astop()
    output = worker.log()
    warnings = [line for line in output.splitlines() if "internals missing" in line]
    assert len(warnings) == 1, output
    assert MISSING in warnings[0], output
    assert "Traceback" not in output, output


async def test_a_full_handshake_queue_without_the_adapter_closes_refused_sockets_without_a_traceback(
    alice, tmp_path
):
    """No Denial Response extension and no 1013 under plain daphne: the refused socket is closed (1000)."""
    argv = [sys.executable, "-c", DAPHNE_WITHOUT_INTERNAL, "-b", "127.0.0.1", "-p", "{port}", APP]
    env = subprocess_env() | {"WS_HANDSHAKE_QUEUE_LIMIT": "1"}
    worker = Worker(argv=argv, name="daphne", env=env, log_path=tmp_path / "server.log")
    try:
        await worker.astart()
        opening = await browser_opening(f"{worker.ws}/ws/notifications/", alice, open_timeout=30)
        async with credentials_locked():  # alice's handshake waits in its lookup: the queue of one is full
            held = asyncio.ensure_future(opening)
            await until_in_progress(worker.url, 1)
            async with connect(f"{worker.ws}/ws/live/", open_timeout=10) as refused:
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(refused.recv(), 10)
            assert refused.close_code == 1000
        socket = await held
        await receive_json(socket, "welcome")
        await socket.close()
    finally:
        await sync_to_async(connections.close_all)()
        await worker.astop()
    output = worker.log()
    assert "event=handshakes_refused count=1" in output, output
    assert "Traceback" not in output, output
