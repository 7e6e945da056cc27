"""A declaration changed after sockets subscribed: the subscriptions it no longer allows end.

Through the full ASGI application, in this process: the change is made in
code (`declare_topic`, a model save or delete, the groups relation), pushed
after commit, and the socket gets the error frame a subscribe would get now,
naming the topic, and no more of its values.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group

from live import services
from live.models import Topic
from realtime.protocol import Event
from testsupport.asgi import receive_type

pytestmark = pytest.mark.django_db(transaction=True)

publish = sync_to_async(services.publish_topic)
declare = sync_to_async(services.declare_topic)


async def subscribed(socket, *topics: str) -> None:
    await socket.send_json_to({"type": "subscribe", "topics": list(topics)})
    assert [(await receive_type(socket, "subscribed"))["topic"] for _ in topics] == list(topics)


async def ended(socket) -> tuple[str, str]:
    """(code, topic) of the next frame, an error naming a topic."""
    frame = await receive_type(socket, "error")
    return frame["code"], frame["topic"]


async def next_update(socket) -> tuple[str, object]:
    frame = await receive_type(socket, "update")
    return frame["topic"], frame["data"]


async def test_a_public_topic_made_logged_in_only_ends_anonymous_subscriptions(socket_for, alice, stocks):
    """`stocks.` made `authenticated`: the anonymous socket gets `forbidden` for each of its topics and
    no more values; alice's socket keeps them; the anonymous socket's other topic goes on."""
    await declare(name="bonds.", match=Topic.Match.PREFIX, read=Topic.Read.PUBLIC)
    anonymous, alices = await socket_for("/ws/live/"), await socket_for("/ws/live/", alice)
    await subscribed(anonymous, "stocks.aapl", "stocks.msft", "bonds.x")
    await subscribed(alices, "stocks.aapl")

    await declare(name="stocks.", match=Topic.Match.PREFIX, read=Topic.Read.AUTHENTICATED)
    assert sorted([await ended(anonymous), await ended(anonymous)]) == [
        ("forbidden", "stocks.aapl"),
        ("forbidden", "stocks.msft"),
    ]
    await publish("stocks.aapl", 1)
    await publish("bonds.x", 2)
    assert await next_update(alices) == ("stocks.aapl", 1)
    assert await next_update(anonymous) == ("bonds.x", 2), "nothing of stocks.* after its error"
    await anonymous.send_json_to({"type": "subscribe", "topics": ["stocks.aapl"]})
    assert await ended(anonymous) == ("forbidden", "stocks.aapl")


async def test_a_declaration_moved_to_other_groups_ends_the_subscriptions_of_users_outside_them(
    socket_for, alice, bob
):
    """`desk` moved from the traders group (alice, bob) to the leads (alice): bob's ends, alice's stays."""
    traders = await Group.objects.acreate(name="traders")
    leads = await Group.objects.acreate(name="leads")
    for user, groups in ((alice, (traders, leads)), (bob, (traders,))):
        await sync_to_async(user.groups.add)(*groups)
    topic = await declare(name="desk", read=Topic.Read.GROUPS, groups=[traders])
    alices, bobs = await socket_for("/ws/live/", alice), await socket_for("/ws/live/", bob)
    for socket in (alices, bobs):
        await subscribed(socket, "desk")

    await sync_to_async(topic.groups.set)([leads])
    assert await ended(bobs) == ("forbidden", "desk")
    await publish("desk", "quote")
    assert await next_update(alices) == ("desk", "quote")
    await bobs.send_json_to({"type": "ping"})
    assert await receive_type(bobs, "pong") == {"type": "pong"}


async def test_a_renamed_or_deleted_declaration_ends_its_subscriptions_with_unknown_topic(socket_for, alice):
    """`scores.final` renamed to `scores.done`: its subscribers get `unknown_topic`; `live.` deleted: too."""
    final = await declare(name="scores.final")
    await declare(name="live.", match=Topic.Match.PREFIX, read=Topic.Read.PUBLIC)
    socket = await socket_for("/ws/live/", alice)
    await subscribed(socket, "scores.final", "live.feed")

    final.name = "scores.done"
    await sync_to_async(final.save)()
    assert await ended(socket) == ("unknown_topic", "scores.final")
    await sync_to_async((await Topic.objects.aget(name="live.")).delete)()
    assert await ended(socket) == ("unknown_topic", "live.feed")


async def test_a_change_is_one_channel_layer_message_whatever_the_sockets(socket_for, stocks, monkeypatch):
    """Ten anonymous sockets on a topic made logged-in only: one message for the change, ten errors."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    sent: list[str] = []
    group_send = layer.group_send

    async def counting(group, message):
        sent.append(message["event"]["type"])
        await group_send(group, message)

    monkeypatch.setattr(layer, "group_send", counting)
    sockets = [await socket_for("/ws/live/") for _ in range(10)]
    for socket in sockets:
        await subscribed(socket, "stocks.aapl")
    await declare(name="stocks.", match=Topic.Match.PREFIX, read=Topic.Read.AUTHENTICATED)
    for socket in sockets:
        assert await ended(socket) == ("forbidden", "stocks.aapl")
    assert [kind for kind in sent if kind == Event.TOPIC_RULES] == [Event.TOPIC_RULES]
