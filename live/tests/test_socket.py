"""/ws/live/ through the full ASGI application: subscribing, updates, refusals, publishing, limits."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group

from live import services
from live.models import Topic
from testsupport.asgi import closed_with, receive_type
from testsupport.auth import make_token

pytestmark = pytest.mark.django_db(transaction=True)

publish = sync_to_async(services.publish_topic)
declare = sync_to_async(services.declare_topic)


async def subscribe(socket, *topics: str, ref: str | None = None) -> None:
    frame = {"type": "subscribe", "topics": list(topics)}
    if ref is not None:
        frame["ref"] = ref
    await socket.send_json_to(frame)


async def assert_quiet(socket) -> None:
    """Nothing was waiting before a ping's pong."""
    await socket.send_json_to({"type": "ping"})
    assert await receive_type(socket, "pong") == {"type": "pong"}


async def test_an_anonymous_socket_reads_public_topics_latest_value_then_updates(socket_for, stocks):
    """Without logging in: `subscribed` with the latest value (null when never published), then `update`s."""
    await publish("stocks.aapl", {"price": 189.5})
    socket = await socket_for("/ws/live/")
    await subscribe(socket, "stocks.aapl", "stocks.msft")
    assert await receive_type(socket, "subscribed") == {
        "type": "subscribed",
        "topic": "stocks.aapl",
        "seq": 1,
        "data": {"price": 189.5},
    }
    assert await receive_type(socket, "subscribed") == {
        "type": "subscribed",
        "topic": "stocks.msft",
        "seq": None,
        "data": None,
    }
    await publish("stocks.msft", {"price": 415.2})
    await publish("stocks.aapl", [1, "two", None])
    assert await receive_type(socket, "update") == {
        "type": "update",
        "topic": "stocks.msft",
        "seq": 1,
        "data": {"price": 415.2},
    }
    assert await receive_type(socket, "update") == {
        "type": "update",
        "topic": "stocks.aapl",
        "seq": 2,
        "data": [1, "two", None],
    }
    await assert_quiet(socket)


async def test_refused_topics_get_errors_naming_them_and_others_still_subscribe(socket_for, stocks, scores):
    """Anonymous: unknown topic gets unknown_topic, a logged-in one forbidden; the public one subscribes."""
    socket = await socket_for("/ws/live/")
    await subscribe(socket, "bonds.x", "scores.final", "stocks.aapl", "Not A Name", ref="r1")
    frames = [await socket.receive_json_from(timeout=10) for _ in range(4)]
    errors = [(f["code"], f["topic"], f["ref"]) for f in frames if f["type"] == "error"]
    assert errors == [
        ("unknown_topic", "bonds.x", "r1"),
        ("forbidden", "scores.final", "r1"),
        ("unknown_topic", "Not A Name", "r1"),
    ]
    assert [f["topic"] for f in frames if f["type"] == "subscribed"] == ["stocks.aapl"]
    # Nothing arrives for the refused ones.
    await publish("scores.final", {"home": 1})
    await assert_quiet(socket)


async def test_logged_in_users_read_by_rule_and_group(socket_for, alice, bob, scores):
    """`desk` is for the traders group: alice (a trader) subscribes, bob is forbidden; both read scores."""
    traders = await sync_to_async(Group.objects.create)(name="traders")
    await sync_to_async(alice.groups.add)(traders)
    await declare(name="desk", read=Topic.Read.GROUPS, groups=[traders])
    alices, bobs = await socket_for("/ws/live/", alice), await socket_for("/ws/live/", bob)
    for socket in (alices, bobs):
        await subscribe(socket, "desk", "scores.final")
    assert [(await receive_type(alices, "subscribed"))["topic"] for _ in range(2)] == ["desk", "scores.final"]
    refused = await receive_type(bobs, "error")
    assert (refused["code"], refused["topic"]) == ("forbidden", "desk")
    assert (await receive_type(bobs, "subscribed"))["topic"] == "scores.final"


async def test_unsubscribe_stops_updates(socket_for, stocks):
    """After `unsubscribed`, a topic's new values no longer arrive; the other topic's still do."""
    socket = await socket_for("/ws/live/")
    await subscribe(socket, "stocks.aapl", "stocks.msft")
    await receive_type(socket, "subscribed")
    await receive_type(socket, "subscribed")
    await socket.send_json_to({"type": "unsubscribe", "topics": ["stocks.aapl", "stocks.nope"]})
    assert await receive_type(socket, "unsubscribed") == {
        "type": "unsubscribed",
        "topics": ["stocks.aapl", "stocks.nope"],
    }
    await publish("stocks.aapl", 1)
    await publish("stocks.msft", 2)
    update = await receive_type(socket, "update")
    assert (update["topic"], update["data"]) == ("stocks.msft", 2)
    await assert_quiet(socket)


async def test_subscribing_again_gives_the_latest_value_again(socket_for, stocks):
    """A second subscribe to the same topic answers with a fresh `subscribed`, as after a reconnect."""
    socket = await socket_for("/ws/live/")
    await subscribe(socket, "stocks.aapl")
    await receive_type(socket, "subscribed")
    await publish("stocks.aapl", 7)
    assert (await receive_type(socket, "update"))["seq"] == 1
    await subscribe(socket, "stocks.aapl")
    again = await receive_type(socket, "subscribed")
    assert (again["seq"], again["data"]) == (1, 7)


async def test_clients_publish_where_allowed_within_their_rate(socket_for, alice, bob, stocks, scores):
    """Alice publishes to scores.* (bob hears it); stocks.* is forbidden; past the burst, rate_limited."""
    alices, bobs = await socket_for("/ws/live/", alice), await socket_for("/ws/live/", bob)
    await subscribe(bobs, "scores.final")
    await receive_type(bobs, "subscribed")
    await alices.send_json_to({"type": "publish", "topic": "scores.final", "data": {"home": 2}})
    update = await receive_type(bobs, "update")
    assert (update["seq"], update["data"]) == (1, {"home": 2})
    await alices.send_json_to({"type": "publish", "topic": "stocks.aapl", "data": 1, "ref": "p"})
    refused = await receive_type(alices, "error")
    assert (refused["code"], refused["topic"], refused["ref"]) == ("forbidden", "stocks.aapl", "p")
    for i in range(3):  # burst of 3, one already used
        await alices.send_json_to({"type": "publish", "topic": "scores.final", "data": i})
    limited = await receive_type(alices, "error")
    assert (limited["code"], limited["topic"]) == ("rate_limited", "scores.final")
    assert [(await receive_type(bobs, "update"))["data"] for _ in range(2)] == [0, 1]
    await assert_quiet(bobs)


async def test_anonymous_and_oversized_publishes_are_refused(socket_for, alice, scores):
    """Anonymous: not_authenticated; data over 16 KiB as JSON: too_large; nothing published."""
    anonymous, alices = await socket_for("/ws/live/"), await socket_for("/ws/live/", alice)
    await anonymous.send_json_to({"type": "publish", "topic": "scores.final", "data": 1})
    assert (await receive_type(anonymous, "error"))["code"] == "not_authenticated"
    await alices.send_json_to({"type": "publish", "topic": "scores.final", "data": "x" * (16 * 1024)})
    assert (await receive_type(alices, "error"))["code"] == "too_large"
    await alices.send_json_to({"type": "publish", "topic": "scores.final", "data": "x" * (16 * 1024 - 2)})
    await subscribe(alices, "scores.final")
    assert (await receive_type(alices, "subscribed"))["seq"] == 1


async def test_topic_limits_per_frame_and_per_socket(socket_for, stocks, settings):
    """101 names in a frame: too_large, none subscribed; past LIVE_MAX_TOPICS each extra topic: too_large."""
    settings.LIVE_MAX_TOPICS = 3
    socket = await socket_for("/ws/live/")
    await subscribe(socket, *(f"stocks.s{i}" for i in range(101)))
    assert (await receive_type(socket, "error"))["code"] == "too_large"
    await subscribe(socket, "stocks.a", "stocks.b")
    assert [(await receive_type(socket, "subscribed"))["topic"] for _ in range(2)] == ["stocks.a", "stocks.b"]
    await subscribe(socket, "stocks.b", "stocks.c", "stocks.d")
    frames = [await socket.receive_json_from(timeout=10) for _ in range(3)]
    assert [(f["type"], f["topic"]) for f in frames if f["type"] != "error"] == [
        ("subscribed", "stocks.b"),
        ("subscribed", "stocks.c"),
    ]
    assert [(f["code"], f["topic"]) for f in frames if f["type"] == "error"] == [("too_large", "stocks.d")]


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "subscribe"},
        {"type": "subscribe", "topics": "stocks.a"},
        {"type": "subscribe", "topics": []},
        {"type": "subscribe", "topics": [1]},
        {"type": "subscribe", "topics": ["x" * 101]},
        {"type": "publish", "topic": "stocks.a"},
        {"type": "unsubscribe", "topics": [None]},
    ],
)
async def test_malformed_frames_get_invalid_message(socket_for, stocks, frame):
    """Wrong shapes are invalid_message, and the socket stays open."""
    socket = await socket_for("/ws/live/")
    await socket.send_json_to(frame)
    assert (await receive_type(socket, "error"))["code"] == "invalid_message"
    await assert_quiet(socket)


async def test_subscribing_too_often_is_rate_limited(socket_for, stocks, settings):
    """Past LIVE_SUBSCRIBE_BURST subscribe/unsubscribe frames at once: rate_limited."""
    settings.LIVE_SUBSCRIBE_BURST = 2
    settings.LIVE_SUBSCRIBE_RATE_PER_SECOND = 0.001
    socket = await socket_for("/ws/live/")
    await subscribe(socket, "stocks.a")
    assert (await receive_type(socket, "subscribed"))["topic"] == "stocks.a"
    await socket.send_json_to({"type": "unsubscribe", "topics": ["stocks.a"]})
    await receive_type(socket, "unsubscribed")
    await subscribe(socket, "stocks.b")
    assert (await receive_type(socket, "error"))["code"] == "rate_limited"


async def test_anonymous_sockets_per_address_are_capped(socket_for, stocks, settings):
    """Past LIVE_ANONYMOUS_SOCKETS_PER_ADDRESS, the next anonymous socket closes with 4429."""
    settings.LIVE_ANONYMOUS_SOCKETS_PER_ADDRESS = 2
    first, second = await socket_for("/ws/live/"), await socket_for("/ws/live/")
    for socket in (first, second):
        await assert_quiet(socket)
    third = await socket_for("/ws/live/")
    assert await closed_with(third) == (4429, "too_many_sockets")
    await first.disconnect()
    fourth = await socket_for("/ws/live/")
    await assert_quiet(fourth)


async def test_an_anonymous_socket_that_authenticates_reads_logged_in_topics(
    socket_for, alice, scores, settings
):
    """`auth` on an anonymous socket: scores.* was forbidden, then subscribes; its address slot is freed."""
    settings.LIVE_ANONYMOUS_SOCKETS_PER_ADDRESS = 1
    socket = await socket_for("/ws/live/", origin=None)
    await subscribe(socket, "scores.final")
    assert (await receive_type(socket, "error"))["code"] == "forbidden"
    await socket.send_json_to({"type": "auth", "token": await sync_to_async(make_token)(alice)})
    await subscribe(socket, "scores.final")
    assert (await receive_type(socket, "subscribed"))["topic"] == "scores.final"
    other = await socket_for("/ws/live/")  # the address's one anonymous slot is free again
    await assert_quiet(other)


async def test_other_endpoints_still_close_anonymous_sockets(socket_for, settings):
    """Only /ws/live/ serves sockets without credentials: /ws/notifications/ closes them with 4401."""
    settings.WS_AUTH_TIMEOUT_SECONDS = 0.2
    socket = await socket_for("/ws/notifications/")
    assert await closed_with(socket) == (4401, "not_authenticated")


async def test_one_publish_is_one_channel_layer_message_whatever_the_subscribers(
    socket_for, stocks, monkeypatch
):
    """Ten sockets on one topic: a publish sends one group message, and each socket gets its update."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    sent: list[str] = []
    group_send = layer.group_send

    async def counting(group, message):
        sent.append(group)
        await group_send(group, message)

    monkeypatch.setattr(layer, "group_send", counting)
    sockets = [await socket_for("/ws/live/") for _ in range(10)]
    for socket in sockets:
        await subscribe(socket, "stocks.aapl")
        await receive_type(socket, "subscribed")
    await publish("stocks.aapl", 42)
    for socket in sockets:
        assert (await receive_type(socket, "update"))["data"] == 42
    assert [group for group in sent if group.startswith("topic.")] == ["topic.stocks.aapl"]
