"""The `notification` object of the wire protocol and the HTTP API."""

from __future__ import annotations

from typing import Any

from notifications.models import Notification
from realtime.protocol import iso


def notification_dict(notification: Notification) -> dict[str, Any]:
    return {
        "id": notification.id,
        "title": notification.title,
        "body": notification.body,
        "level": notification.level,
        "url": notification.url or None,
        "data": notification.data,
        "created_at": iso(notification.created_at),
        "read": notification.read_at is not None,
    }
