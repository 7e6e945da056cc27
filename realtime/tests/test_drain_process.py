"""SIGTERM on a real worker (`python -m realtime.serve`): sockets get 1012, the process exits."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed

from conftest import subprocess_env
from realtime.tests.servers import browser_socket, free_port, receive_json, wait_ready


@pytest.mark.django_db(transaction=True)
async def test_sigterm_closes_sockets_with_1012_and_exits(alice, tmp_path):
    port = free_port()
    env = subprocess_env() | {"DRAIN_GRACE_SECONDS": "0.5", "DRAIN_CLOSE_TIMEOUT_SECONDS": "3"}
    log = (tmp_path / "worker.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "realtime.serve",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "config.asgi:application",
        env=env,
        cwd=str(settings.BASE_DIR),
        stdout=log,
        stderr=log,
    )
    try:
        await wait_ready(f"http://127.0.0.1:{port}/readyz", process=process)
        ws = await browser_socket(f"ws://127.0.0.1:{port}/ws/notifications/", alice)
        await receive_json(ws, "welcome")

        process.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None, "closed without a close frame"
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1012, "server_restarting")

        # It no longer listens: new clients go to another worker.
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()
    output = (tmp_path / "worker.log").read_text()
    assert "event=drain_start open=1" in output
    assert "event=drain_done closed=1 unanswered=0" in output, output
