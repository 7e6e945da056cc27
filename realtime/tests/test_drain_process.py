"""SIGTERM on a real worker (each daphne launcher, and uvicorn): sockets get 1012, the process exits."""

from __future__ import annotations

import asyncio
import signal

import pytest
from websockets.exceptions import ConnectionClosed

from realtime.launcher import SERVERS, Worker
from testsupport.processes import subprocess_env
from testsupport.servers import browser_socket, receive_json

DAPHNE_LAUNCHERS = ("realtime.serve", "daphne", "runserver")


@pytest.mark.parametrize("server", list(SERVERS))
@pytest.mark.django_db(transaction=True)
async def test_sigterm_closes_sockets_with_1012_and_exits(server, alice, tmp_path):
    """The open socket gets 1012 `server_restarting`, the port stops listening, the process exits 0."""
    env = subprocess_env() | {"DRAIN_GRACE_SECONDS": "0.5", "DRAIN_CLOSE_TIMEOUT_SECONDS": "3"}
    # Stopped with SIGTERM by the test itself; a kill only if that failed.
    worker = Worker(server, env=env, log_path=tmp_path / "worker.log", stop_grace=0)
    port = worker.port
    try:
        await worker.astart()
        ws = await browser_socket(f"ws://127.0.0.1:{port}/ws/notifications/", alice)
        await receive_json(ws, "welcome")

        worker.signal(signal.SIGTERM)
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
        assert await worker.exited(15) in clean
    finally:
        await worker.astop()
    output = worker.log()
    assert "Traceback" not in output, output
    if server not in DAPHNE_LAUNCHERS:
        return
    assert "event=drain_start open=1" in output
    assert "event=drain_done closed=1 unanswered=0" in output, output
