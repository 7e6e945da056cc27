"""Handshakes held in progress, and a worker's handshake queue as its /metrics shows it.

`credentials_locked()` takes an exclusive lock on the tables every credential
lookup reads (the sessions and the users), from a PostgreSQL connection of its
own on the test's database, until the block ends: a handshake that carries a
session cookie or a bearer token then waits in its lookup, in progress, as it
would behind a slow database, in a worker or in this process. Make the
sessions and tokens first; nothing can read those tables meanwhile.
Anonymous sockets and pages that need no login do not wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import psycopg

from realtime.launcher import database_url, http_get
from testsupport.faults import poll


@contextlib.asynccontextmanager
async def credentials_locked() -> AsyncIterator[None]:
    """The session and user tables locked (ACCESS EXCLUSIVE) for the block; released at its end."""
    from django.contrib.auth import get_user_model
    from django.contrib.sessions.models import Session
    from django.db import connection

    tables = ", ".join(model._meta.db_table for model in (Session, get_user_model()))
    async with await psycopg.AsyncConnection.connect(database_url(connection.settings_dict)) as lock:
        async with lock.transaction():
            await lock.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")  # our own model names
            yield


def handshake_queue(base: str) -> tuple[float, float]:
    """(handshakes in progress, handshakes refused so far) from a worker's /metrics."""
    status, body = http_get(f"{base}/metrics")
    assert status == 200, body
    in_progress = re.search(r"^relay_websocket_handshakes_in_progress (\S+)$", body, re.M)
    refused = re.search(r"^relay_websocket_handshakes_refused_total (\S+)$", body, re.M)
    assert in_progress and refused, body
    return float(in_progress.group(1)), float(refused.group(1))


async def until_in_progress(base: str, count: int) -> None:
    """Wait (bounded) until the worker at `base` has `count` handshakes in progress."""

    async def reached() -> bool:
        return (await asyncio.to_thread(handshake_queue, base))[0] == count

    await poll(reached, seconds=20, what=f"{count} handshakes in progress")


async def until_refused(base: str, count: float) -> None:
    """Wait (bounded) until the worker at `base` has refused at least `count` handshakes in all."""

    async def reached() -> bool:
        return (await asyncio.to_thread(handshake_queue, base))[1] >= count

    await poll(reached, seconds=30, what=f"{count} handshakes refused")
