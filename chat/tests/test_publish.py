"""POST /api/publish/chat/<slug>/ with an API key, through the full ASGI application."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chat.models import Message
from realtime.authentication import apikeys
from testsupport.asgi import http, receive_type

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api_key(db):
    return apikeys.create_api_key(name="ci")[1]


async def publish(key: str, slug: str, body) -> tuple[int, dict]:
    status, answer, _ = await http(
        "POST",
        f"/api/publish/chat/{slug}/",
        body=body,
        headers=[(b"authorization", f"Api-Key {key}".encode())],
    )
    return status, answer


async def test_a_system_message_reaches_the_room_with_no_author(socket_for, api_key, alice, lobby):
    """The publish API stores a system message and every socket in the room gets it."""
    socket = await socket_for("/ws/chat/lobby/", alice)
    await receive_type(socket, "welcome")
    status, body = await publish(api_key, "lobby", {"body": "  Deploy finished  "})
    assert status == 201
    assert (body["message"]["author"], body["message"]["body"], body["message"]["room"]) == (
        None,
        "Deploy finished",
        "lobby",
    )
    frame = await receive_type(socket, "message")
    assert frame["message"] == body["message"]


@pytest.mark.parametrize(
    ("slug", "payload", "status", "code"),
    [
        ("nowhere", {"body": "hi"}, 404, "not_found"),
        ("lobby", {"body": ""}, 400, "invalid_message"),
        ("lobby", {"body": 5}, 400, "invalid_message"),
        ("lobby", {"text": "hi"}, 400, "invalid_message"),
        ("lobby", {"body": "x" * 4001}, 413, "too_large"),
    ],
)
async def test_bad_publishes_store_nothing(api_key, lobby, slug, payload, status, code):
    """Unknown rooms and bad bodies get the contract's error and store nothing."""
    got_status, body = await publish(api_key, slug, payload)
    assert (got_status, body["error"]) == (status, code)
    assert not await sync_to_async(Message.objects.exists)()


async def test_a_revoked_or_missing_key_is_401(api_key, lobby):
    """Without a valid API key nothing is posted."""
    status, _ = await publish("rk_00000000_notakey", "lobby", {"body": "hi"})
    assert status == 401
    from realtime.authentication.models import ApiKey

    await sync_to_async(apikeys.revoke_api_keys)(keys=ApiKey.objects.all())
    status, _ = await publish(api_key, "lobby", {"body": "hi"})
    assert status == 401
