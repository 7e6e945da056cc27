"""A socket's cleanup (`disconnect()`: open-socket gauge, groups, `left()`) runs however it ends.

Clients that drop right after the 101 are covered under every server in
realtime/tests/test_handshake_servers.py; this is the end no client causes.
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from realtime.adapter import drain
from testsupport.asgi import closed_with, receive_type

pytestmark = pytest.mark.django_db(transaction=True)


def open_chat_sockets() -> float:
    return REGISTRY.get_sample_value("relay_websocket_open", {"endpoint": "chat"}) or 0.0


async def test_a_socket_whose_application_is_cancelled_still_leaves(socket_for, alice, bob, lobby):
    """A cancelled application (daphne kills one that outlives its connection) still runs disconnect()."""
    before = open_chat_sockets()
    alices = await socket_for("/ws/chat/lobby/", alice)
    await receive_type(alices, "welcome")
    assert open_chat_sockets() == before + 1
    alices.future.cancel()
    await alices.wait()
    assert open_chat_sockets() == before
    bobs = await socket_for("/ws/chat/lobby/", bob)
    assert (await receive_type(bobs, "welcome"))["online"] == ["bob"]


async def test_a_socket_accepted_while_draining_never_shows_its_user_online(socket_for, alice, bob, lobby):
    """A worker that drains closes a new socket with 1012 at once, and its user never joins the room."""
    await drain.drain(grace=0, close_timeout=0)
    try:
        refused = await socket_for("/ws/chat/lobby/", alice)
        assert await closed_with(refused) == (1012, "server_restarting")
    finally:
        drain.reset()
    watcher = await socket_for("/ws/chat/lobby/", bob)
    welcome = await receive_type(watcher, "welcome")
    assert welcome["online"] == ["bob"]


@pytest.mark.redis
async def test_a_socket_cancelled_while_joining_its_group_leaves_no_member_in_the_hub(alice):
    """An application cancelled while its group join waits on Redis (its client left) leaves no member."""
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.conf import settings

    from config.asgi import application
    from realtime.consumers import _releasing
    from realtime.fanout.hub import get_hub
    from realtime.protocol import user_group
    from testsupport.asgi import ORIGIN
    from testsupport.auth import session_cookie

    cookie = f"{settings.SESSION_COOKIE_NAME}={await sync_to_async(session_cookie)(alice)}"
    socket = WebsocketCommunicator(
        application,
        "/ws/notifications/",
        headers=[(b"cookie", cookie.encode()), (b"origin", ORIGIN.encode())],
    )
    await socket.send_input({"type": "websocket.connect"})
    group = user_group(alice.pk)
    # The socket shows in the hub's members as soon as its join of the user's group begins, and the
    # group is new to this hub, so the join is waiting on Redis: cancel it there.
    for _ in range(100_000):
        if get_hub().members.get(group):
            break
        await asyncio.sleep(0)
    assert get_hub().members.get(group), "the socket never began its join"
    socket.future.cancel()
    await socket.wait()
    await asyncio.gather(*_releasing)
    assert not get_hub().members.get(group)
