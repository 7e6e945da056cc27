"""Losing access across worker processes (issue 14 items 1 and 4).

Real servers in subprocesses sharing the test's PostgreSQL database and Redis;
the removals and deactivations are made in this process, as from a shell.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chat import services
from notifications.services import notify
from realtime.authentication.tokens import issue_token
from realtime.launcher import SERVERS
from testsupport.faults import start_workers
from testsupport.servers import browser_socket, get_json_as, receive_json, token_socket

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT = 10.0


async def until_closed(ws) -> tuple[list[dict], int]:
    """Frames received until the server closes the socket, and its close code (bounded by WAIT)."""
    frames = []
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))
    except ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd else None


def _remove_with_service(room, user) -> None:
    services.remove_members(room=room, users=[user])


def _remove_plainly(room, user) -> None:
    room.members.remove(user)


@pytest.fixture
def trio(alice, bob, carol):
    return services.create_room(slug="trio", title="Trio", private=True, members=[alice, bob, carol])


@pytest.mark.parametrize("remove", [_remove_with_service, _remove_plainly], ids=["service", "plain"])
@pytest.mark.parametrize("servers", [("realtime.serve", "realtime.serve"), ("uvicorn-websockets", "daphne")])
async def test_a_member_removed_from_a_shell_is_closed_on_both_workers(
    request, alice, bob, carol, trio, remove, servers
):
    """Carol, on two workers, removed from `trio`: both sockets 4403, alice's next post never reaches her."""
    a, b = await start_workers(request, *servers)
    try:
        url = "/ws/chat/trio/"
        alices = await browser_socket(a.ws + url, alice)
        bobs = await browser_socket(b.ws + url, bob)
        carols = [await browser_socket(worker.ws + url, carol) for worker in (a, b)]
        for socket in (alices, bobs, *carols):
            await receive_json(socket, "welcome", WAIT)
        await sync_to_async(remove)(trio, carol)
        # Straight after, before the closes can have arrived.
        message, _ = await sync_to_async(services.post_message)(
            room=trio, author=alice, body="not for carol", client_id="a-1"
        )
        for socket in carols:
            frames, code = await until_closed(socket)
            assert code == 4403
            assert not [f for f in frames if f["type"] == "message"], frames
        for socket in (alices, bobs):
            frames = []
            while not frames or frames[-1]["type"] != "message":
                frames.append(json.loads(await asyncio.wait_for(socket.recv(), WAIT)))
            assert frames[-1]["message"]["id"] == message.id
        # A new socket is refused at the handshake; HTTP history on either worker is 403.
        again = await browser_socket(a.ws + url, carol)
        assert (await until_closed(again))[1] == 4403
        fetch = database_sync_to_async(get_json_as)
        for worker in (a, b):
            status, body = await fetch(worker.url, "/api/chat/rooms/trio/messages/", carol)
            assert (status, body["error"]) == (403, "forbidden")
        for socket in (alices, bobs):
            await socket.close()
    finally:
        await asyncio.gather(a.astop(), b.astop())


@pytest.mark.parametrize("server", list(SERVERS))
async def test_a_user_saved_inactive_from_a_shell_is_closed_under_each_server(request, alice, bob, server):
    """`is_active = False; save()` here closes alice's session and token sockets on the worker (4401)."""
    (worker,) = await start_workers(request, server)
    try:
        url = worker.ws + "/ws/notifications/"
        token = (await sync_to_async(issue_token)(user=alice)).access
        alices = [await browser_socket(url, alice), await token_socket(url, token)]
        bobs = await browser_socket(url, bob)
        for socket in (*alices, bobs):
            await receive_json(socket, "welcome", WAIT)

        def deactivate():
            alice.is_active = False
            alice.save()

        await sync_to_async(deactivate)()
        await sync_to_async(notify)(users=[alice, bob], title="after")
        for socket in alices:
            frames, code = await until_closed(socket)
            assert code == 4401
            assert not [f for f in frames if f["type"] == "notification"], frames
        assert (await receive_json(bobs, "notification", WAIT))["notification"]["title"] == "after"
        await bobs.close()
        try:
            refused = await token_socket(url, token)
        except InvalidStatus:
            return
        assert (await until_closed(refused))[1] == 4401
    finally:
        await worker.astop()
