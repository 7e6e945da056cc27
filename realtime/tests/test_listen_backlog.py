"""The listen queue each server gives its port: room for a crowd reconnecting at once.

Read as the kernel reports it (`ss`: a listening socket's Send-Q is its backlog).
"""

from __future__ import annotations

import subprocess

import pytest

from realtime.launcher import SERVERS
from testsupport.faults import start_workers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

DAPHNE_LAUNCHERS = {"daphne", "realtime.serve", "runserver"}


def listen_queue(port: int) -> int:
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[2])  # State Recv-Q Send-Q ...


async def test_every_server_listens_with_a_queue_for_thousands_of_connections(request):
    """daphne's launchers use LISTEN_BACKLOG (Twisted's own is 50); uvicorn keeps its 2048."""
    workers = await start_workers(request, *SERVERS, LISTEN_BACKLOG="1234")
    try:
        queues = {worker.name: listen_queue(worker.port) for worker in workers}
    finally:
        for worker in workers:
            await worker.astop()
    assert queues == {name: 1234 if name in DAPHNE_LAUNCHERS else 2048 for name in SERVERS}
