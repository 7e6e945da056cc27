"""Clients that record what they got through a fault, and the check that nothing was lost.

`Follower`s reconnect and resume like the browser client and record every id
they got per connection; a `Poster` posts through the publish API and records
every answer; `settle` compares the followers with the database at the end: no
gap, no duplicate. What the faults break is in `testsupport.faults`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from websockets.exceptions import ConnectionClosed, WebSocketException

from chat.models import Message
from notifications.models import Notification
from testsupport.faults import poll
from testsupport.servers import browser_socket, publish, token_socket


@dataclass
class Follower:
    """A client that reconnects and resumes like static/js/realtime.js, recording every id."""

    urls: list[str]  # tried in turn: a dead worker's clients go to the next
    user: object  # a session cookie for this user is made in the test's database...
    kind: str  # "message" or "notification"
    token: str | None = None  # ...unless a bearer token is given (a worker on another database)
    connections: list[list[int]] = field(default_factory=list)
    closes: list[int | None] = field(default_factory=list)
    last_id: int | None = None
    live: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    # Handshakes that failed (refused, dropped by the server, timed out), by error name.
    refused: list[str] = field(default_factory=list)
    # What ended run() other than being stopped: a client that died must not pass for a hang.
    failure: BaseException | None = None

    def ids(self) -> set[int]:
        return {i for c in self.connections for i in c}

    async def run(self) -> None:
        try:
            await self._run()
        except Exception as exc:
            self.failure = exc
            raise

    async def _run(self) -> None:
        attempt = 0
        while not self.stopping:
            url = self.urls[attempt % len(self.urls)]
            attempt += 1
            try:
                if self.token is not None:
                    ws = await token_socket(url, self.token)
                else:
                    ws = await browser_socket(url, self.user)
            except (OSError, TimeoutError, WebSocketException) as exc:
                # Like the browser: any failed opening (a status, a handshake the
                # server dropped) is followed by another attempt.
                self.refused.append(type(exc).__name__)
                await asyncio.sleep(0.3)  # reconnect backoff, not synchronisation
                continue
            got: list[int] = []
            self.connections.append(got)
            try:
                await self._session(ws, got)
            except ConnectionClosed as exc:
                self.closes.append(exc.rcvd.code if exc.rcvd else None)
            finally:
                self.live.clear()
                await ws.close()
            await asyncio.sleep(0.2)

    async def _session(self, ws, got: list[int]) -> None:
        replaying = False
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "welcome":
                if self.last_id is None:
                    # A fresh client starts from welcome: chat's last_id, the inbox's last_id.
                    self.last_id = frame.get("last_id") or 0
                    self.live.set()
                else:
                    replaying = True
                    await ws.send(json.dumps({"type": "resume", "after": self.last_id}))
            elif frame["type"] == self.kind:
                item = frame[self.kind]
                got.append(item["id"])
                if not replaying:
                    self.last_id = max(self.last_id, item["id"])
            elif frame["type"] == "replay_done":
                self.last_id = frame["last_id"] or self.last_id
                if frame["more"]:
                    await ws.send(json.dumps({"type": "resume", "after": self.last_id}))
                else:
                    replaying = False
                    self.live.set()


@dataclass
class Poster:
    """Posts chat messages and notifications through the publish API; records every answer."""

    bases: list[str]
    key: str
    answers: list[tuple[str, int, dict]] = field(default_factory=list)

    async def post(self, n: int) -> None:
        base = self.bases[n % len(self.bases)]
        chat = await asyncio.to_thread(publish, base, self.key, "/api/publish/chat/lobby/", {"body": f"m{n}"})
        self.answers.append(("chat", *chat))
        note = await asyncio.to_thread(
            publish, base, self.key, "/api/publish/notifications/", {"users": ["alice"], "title": f"n{n}"}
        )
        self.answers.append(("notification", *note))


db_message_ids = database_sync_to_async(lambda: set(Message.objects.values_list("id", flat=True)))
db_notification_ids = database_sync_to_async(lambda: set(Notification.objects.values_list("id", flat=True)))

# The ids clients should have got: (chat message ids, notification ids), read from the database.
RowIds = Callable[[], Awaitable[tuple[set[int], set[int]]]]


async def shared_database_ids() -> tuple[set[int], set[int]]:
    return await db_message_ids(), await db_notification_ids()


async def settle(
    followers: list[Follower], poster: Poster, n: int, *, rows: RowIds = shared_database_ids
) -> None:
    """After the fault: one more post (live pushes heal gaps), then every client has every row."""
    await poster.post(n)

    async def converged():
        messages, notes = await rows()
        return all(f.ids() >= (messages if f.kind == "message" else notes) for f in followers)

    try:
        await poll(converged, seconds=40, what="clients converge on the database")
    except AssertionError:
        messages, notes = await rows()
        missing = [
            (f.kind, sorted((messages if f.kind == "message" else notes) - f.ids()), f.closes, f.failure)
            for f in followers
        ]
        raise AssertionError(f"clients did not converge: {missing}") from None
    messages, notes = await rows()
    for follower in followers:
        expected = messages if follower.kind == "message" else notes
        assert follower.ids() == expected, "a client got an id that is not in the database"
        for got in follower.connections:
            assert len(got) == len(set(got)), f"duplicate within one connection: {got}"


def check_answers(poster: Poster) -> None:
    """Every post was either stored and acknowledged, or refused with an error: never silent."""
    for kind, status, body in poster.answers:
        if status in (201, 202):
            continue
        assert status in (0, 503) or "error" in body, (kind, status, body)
    stored = sum(1 for kind, status, _ in poster.answers if kind == "chat" and status == 201)
    assert stored >= 1


async def follow(
    worker_urls: list[str], alice, *, token: str | None = None
) -> tuple[list[Follower], list[asyncio.Task]]:
    followers = [
        Follower([f"{u}/ws/chat/lobby/" for u in worker_urls], alice, "message", token),
        Follower([f"{u}/ws/notifications/" for u in worker_urls], alice, "notification", token),
    ]
    tasks = [asyncio.ensure_future(f.run()) for f in followers]
    for f in followers:
        await asyncio.wait_for(f.live.wait(), 20)
    return followers, tasks


async def stop_following(followers, tasks) -> None:
    for f in followers:
        f.stopping = True
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for f in followers:
        assert f.failure is None, f"a follower died: {f.failure!r}"
