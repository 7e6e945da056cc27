"""POST /api/publish/notifications/ with an API key, through the full ASGI application."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group

from notifications.models import Notification
from realtime.authentication import apikeys
from testsupport.asgi import http, receive_type

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/api/publish/notifications/"


@pytest.fixture
def api_key(db):
    return apikeys.create_api_key(name="ci")[1]


async def publish(key: str, body) -> tuple[int, dict]:
    status, answer, _ = await http(
        "POST", PATH, body=body, headers=[(b"authorization", f"Api-Key {key}".encode())]
    )
    return status, answer


async def sockets_of(socket_for, *users):
    sockets = {}
    for user in users:
        sockets[user.username] = await socket_for("/ws/notifications/", user)
        await receive_type(sockets[user.username], "welcome")
    return sockets


async def assert_reached_exactly(sockets, names: set[str], title: str) -> None:
    """The named sockets got the notification; the others' next frame is the pong to a ping."""
    for name, socket in sockets.items():
        if name in names:
            frame = await receive_type(socket, "notification")
            assert frame["notification"]["title"] == title
        else:
            await socket.send_json_to({"type": "ping"})
            assert await socket.receive_json_from() == {"type": "pong"}


async def test_publish_to_users_reaches_exactly_them(socket_for, api_key, alice, bob, carol):
    """Publishing to users reaches those users' sockets and nobody else's."""
    sockets = await sockets_of(socket_for, alice, bob, carol)
    status, body = await publish(
        api_key, {"users": ["alice", "carol"], "title": "to two", "level": "success"}
    )
    assert (status, body) == (202, {"recipients": 2})
    await assert_reached_exactly(sockets, {"alice", "carol"}, "to two")


async def test_publish_to_groups_reaches_exactly_their_members(socket_for, api_key, alice, bob, carol):
    """Publishing to a group reaches its members' sockets and nobody else's."""
    ops = await Group.objects.acreate(name="ops")
    await sync_to_async(bob.groups.add)(ops)
    sockets = await sockets_of(socket_for, alice, bob, carol)
    status, body = await publish(api_key, {"groups": ["ops"], "title": "to ops", "data": {"k": 1}})
    assert (status, body) == (202, {"recipients": 1})
    await assert_reached_exactly(sockets, {"bob"}, "to ops")


async def test_publish_to_all_reaches_every_active_user(socket_for, api_key, alice, bob, carol, make_user):
    """all: true reaches every active user's socket."""
    await sync_to_async(make_user)("dormant", is_active=False)
    sockets = await sockets_of(socket_for, alice, bob, carol)
    status, body = await publish(api_key, {"all": True, "title": "to all", "url": "/chat/lobby/"})
    assert (status, body) == (202, {"recipients": 3})
    await assert_reached_exactly(sockets, {"alice", "bob", "carol"}, "to all")


async def test_unknown_users_and_groups_are_named_and_nothing_is_sent(socket_for, api_key, alice):
    """Unknown users or groups get 400 naming each of them, and nothing is stored or pushed."""
    sockets = await sockets_of(socket_for, alice)
    status, body = await publish(
        api_key, {"users": ["alice", "zed", "yan"], "groups": ["nope"], "title": "never"}
    )
    assert (status, body["error"]) == (400, "invalid_message")
    assert "yan" in body["detail"]["users"] and "zed" in body["detail"]["users"]
    assert "nope" in body["detail"]["groups"]
    assert not await Notification.objects.filter(title="never").aexists()
    await assert_reached_exactly(sockets, set(), "never")


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        pytest.param({"users": ["alice"]}, {"title"}, id="no-title"),
        pytest.param({"users": ["alice"], "title": "t", "level": "loud"}, {"level"}, id="bad-level"),
        pytest.param({"users": "alice", "title": "t"}, {"users"}, id="users-not-a-list"),
        pytest.param({"users": [1], "title": "t"}, {"users"}, id="user-not-a-string"),
        pytest.param({"all": "yes", "title": "t"}, {"all"}, id="all-not-bool"),
        pytest.param({"users": ["alice"], "title": "t", "data": [1]}, {"data"}, id="data-not-object"),
        pytest.param({"users": ["alice"], "title": "t", "url": "javascript:x"}, {"url"}, id="bad-url"),
        pytest.param({"user": ["alice"], "title": "t"}, {"user"}, id="unknown-field"),
        pytest.param({"title": "t"}, {"users"}, id="no-recipients"),
    ],
)
async def test_validation_errors_are_400_by_field(api_key, alice, payload, fields):
    """An invalid body gets 400 with a detail naming each bad field; nothing is stored."""
    status, body = await publish(api_key, payload)
    assert (status, body["error"]) == (400, "invalid_message")
    assert fields <= set(body["detail"]), body
    assert not await Notification.objects.aexists()


@pytest.mark.parametrize("url", ["//evil.example", "/\\evil.example", "/\t/evil.example"])
async def test_a_url_that_leads_off_site_is_400_invalid_message(api_key, alice, url):
    """`//host`, `/\\host` and `/<tab>/host` get 400 invalid_message naming `url`; nothing is stored."""
    status, body = await publish(api_key, {"users": ["alice"], "title": "t", "url": url})
    assert (status, body["error"]) == (400, "invalid_message")
    assert set(body["detail"]) == {"url"}, body
    assert not await Notification.objects.aexists()


async def test_body_that_is_not_json_is_400(api_key):
    """A body that is not JSON gets 400 invalid_json."""
    status, body = await publish(api_key, b"{nope")
    assert (status, body["error"]) == (400, "invalid_json")
