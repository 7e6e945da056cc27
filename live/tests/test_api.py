"""The topic API: publishing with an API key, reading by the topic's read rule."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group

from live import services
from live.models import Topic
from realtime.authentication.apikeys import create_api_key
from testsupport.asgi import http, receive_type
from testsupport.auth import make_token, session_headers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api_key(db):
    return create_api_key(name="ticker-feed")[1]


def key_headers(key: str):
    return [(b"authorization", f"Api-Key {key}".encode())]


async def test_publishing_with_an_api_key_answers_202_with_the_seq_and_reaches_subscribers(
    socket_for, stocks, api_key
):
    """POST {"data": ...} → 202 {"seq": 1}, then 2; a subscribed socket gets both as updates."""
    socket = await socket_for("/ws/live/")
    await socket.send_json_to({"type": "subscribe", "topics": ["stocks.aapl"]})
    await receive_type(socket, "subscribed")
    for expected, price in ((1, 189.5), (2, 190.25)):
        status, body, _ = await http(
            "POST",
            "/api/publish/topics/stocks.aapl/",
            body={"data": {"price": price}},
            headers=key_headers(api_key),
        )
        assert (status, body) == (202, {"seq": expected})
        update = await receive_type(socket, "update")
        assert (update["seq"], update["data"]) == (expected, {"price": price})


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/api/publish/topics/bonds.x/", {"data": 1}, 404, "unknown_topic"),
        ("/api/publish/topics/Stocks.X/", {"data": 1}, 404, "unknown_topic"),
        ("/api/publish/topics/stocks.x/", {}, 400, "invalid_message"),
        ("/api/publish/topics/stocks.x/", {"data": 1, "extra": 2}, 400, "invalid_message"),
        ("/api/publish/topics/tiny/", {"data": "x" * 40}, 413, "too_large"),
    ],
)
async def test_publish_errors(stocks, api_key, path, body, status, code):
    """Unknown topics are 404 unknown_topic, bad bodies 400, values over the topic's max_bytes 413."""
    await sync_to_async(services.declare_topic)(name="tiny", max_bytes=16)
    answer, data, _ = await http("POST", path, body=body, headers=key_headers(api_key))
    assert (answer, data["error"]) == (status, code)


async def test_publish_needs_an_api_key_not_a_session(stocks, alice):
    """Without a key: 401; a logged-in session is not a key either."""
    status, _, _ = await http("POST", "/api/publish/topics/stocks.x/", body={"data": 1})
    assert status == 401
    headers = await sync_to_async(session_headers)(alice)
    status, _, _ = await http("POST", "/api/publish/topics/stocks.x/", body={"data": 1}, headers=headers)
    assert status == 401


async def test_reading_follows_the_topics_read_rule(stocks, alice, bob):
    """Public: anyone; logged-in only: 401 anonymous; a group's: 403 for others; unknown: 404."""
    traders = await sync_to_async(Group.objects.create)(name="traders")
    await sync_to_async(alice.groups.add)(traders)
    await sync_to_async(services.declare_topic)(name="desk", read=Topic.Read.GROUPS, groups=[traders])
    await sync_to_async(services.declare_topic)(name="news", read=Topic.Read.AUTHENTICATED)
    await sync_to_async(services.publish_topic)("stocks.aapl", {"price": 1.5})
    await sync_to_async(services.publish_topic)("desk", "buy")

    assert (await http("GET", "/api/topics/stocks.aapl/"))[:2] == (
        200,
        {"topic": "stocks.aapl", "seq": 1, "data": {"price": 1.5}},
    )
    assert (await http("GET", "/api/topics/stocks.msft/"))[:2] == (
        200,
        {"topic": "stocks.msft", "seq": None, "data": None},
    )
    assert (await http("GET", "/api/topics/news/"))[0] == 401
    assert (await http("GET", "/api/topics/nope/"))[:2][1]["error"] == "unknown_topic"
    bob_session = await sync_to_async(session_headers)(bob, csrf=False)
    assert (await http("GET", "/api/topics/news/", headers=bob_session))[0] == 200
    assert (await http("GET", "/api/topics/desk/", headers=bob_session))[0] == 403
    alice_token = [(b"authorization", f"Bearer {await sync_to_async(make_token)(alice)}".encode())]
    assert (await http("GET", "/api/topics/desk/", headers=alice_token))[:2] == (
        200,
        {"topic": "desk", "seq": 1, "data": "buy"},
    )
    assert (await http("GET", "/api/topics/desk/", headers=[(b"authorization", b"Bearer nope")]))[0] == 401
    assert (await http("POST", "/api/topics/stocks.aapl/"))[0] == 405
