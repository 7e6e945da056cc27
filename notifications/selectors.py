"""Reads of notifications. Nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

from django.contrib.auth.models import AbstractBaseUser

from notifications.models import Notification
from realtime.replay import Window, rows_after


@dataclass(frozen=True)
class InboxState:
    unread: int
    last_id: int | None


def unread_count(*, user: AbstractBaseUser) -> int:
    return Notification.objects.filter(recipient=user, read_at__isnull=True).count()


def inbox_state(*, user: AbstractBaseUser) -> InboxState:
    """What a socket's `welcome` reports: unread count and the newest id."""
    last = Notification.objects.filter(recipient=user).order_by("-id").values_list("id", flat=True).first()
    return InboxState(unread=unread_count(user=user), last_id=last)


def notifications_after(*, user: AbstractBaseUser, **window: Unpack[Window]) -> list[Notification]:
    """The user's notifications after a socket's cursor (`realtime.replay.rows_after`)."""
    return rows_after(Notification.objects.filter(recipient=user), **window)


def inbox_page(
    *, user: AbstractBaseUser, limit: int, before: int | None = None, unread_only: bool = False
) -> tuple[list[Notification], int | None]:
    """One page of the inbox, newest first, and the cursor for the next page."""
    query = Notification.objects.filter(recipient=user)
    if unread_only:
        query = query.filter(read_at__isnull=True)
    if before is not None:
        query = query.filter(id__lt=before)
    rows = list(query.order_by("-id")[: limit + 1])
    next_before = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_before
