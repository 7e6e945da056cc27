"""SIGTERM on a real worker (each daphne launcher, and uvicorn): sockets get 1012, the process exits."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed

from conftest import subprocess_env
from realtime.tests.servers import SERVERS, browser_socket, free_port, receive_json, server_argv, wait_ready

DAPHNE_LAUNCHERS = ("realtime.serve", "daphne", "runserver")


@pytest.mark.parametrize("server", list(SERVERS))
@pytest.mark.django_db(transaction=True)
async def test_sigterm_closes_sockets_with_1012_and_exits(server, alice, tmp_path):
    """The open socket gets 1012 `server_restarting`, the port stops listening, the process exits 0."""
    port = free_port()
    env = subprocess_env() | {"DRAIN_GRACE_SECONDS": "0.5", "DRAIN_CLOSE_TIMEOUT_SECONDS": "3"}
    log = (tmp_path / "worker.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *server_argv(server, port),
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
        if server in DAPHNE_LAUNCHERS:
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1012, "server_restarting")
        else:  # uvicorn closes every socket itself on shutdown, with 1012 and its own reason
            assert closed.value.rcvd.code == 1012

        # It no longer listens: new clients go to another worker.
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        # uvicorn re-raises the signal once it has shut down cleanly.
        clean = {0} if server in DAPHNE_LAUNCHERS else {0, -signal.SIGTERM}
        assert await asyncio.wait_for(process.wait(), 15) in clean
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()
    output = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in output, output
    if server not in DAPHNE_LAUNCHERS:
        return
    assert "event=drain_start open=1" in output
    assert "event=drain_done closed=1 unanswered=0" in output, output
