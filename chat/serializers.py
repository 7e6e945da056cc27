"""The `message` and room objects of the wire protocol and the HTTP API."""

from __future__ import annotations

from typing import Any

from chat.models import Message, Room
from realtime.protocol import iso


def room_dict(room: Room) -> dict[str, Any]:
    return {"slug": room.slug, "title": room.title, "private": room.private}


def message_dict(message: Message, *, room_slug: str | None = None) -> dict[str, Any]:
    """`room_slug` saves a query when the caller already has the room."""
    return {
        "id": message.id,
        "room": room_slug if room_slug is not None else message.room.slug,
        "author": message.author.get_username() if message.author_id is not None else None,
        "body": message.body,
        "created_at": iso(message.created_at),
        "client_id": message.client_id,
    }
