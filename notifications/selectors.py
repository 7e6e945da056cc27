"""Reads of notifications. Nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q

from notifications.models import Notification


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


def notifications_after(
    *,
    user: AbstractBaseUser,
    after: int,
    limit: int,
    skip: tuple[int, int] | None = None,
    up_to: int | None = None,
) -> list[Notification]:
    """Notifications with id > `after`, ascending, at most `limit`.

    `skip=(low, high)` leaves out ids in (low, high]: those a socket already
    delivered live. `up_to` stops at that id.
    """
    query = Notification.objects.filter(recipient=user, id__gt=after)
    if skip is not None and skip[1] > skip[0]:
        query = query.exclude(Q(id__gt=skip[0]) & Q(id__lte=skip[1]))
    if up_to is not None:
        query = query.filter(id__lte=up_to)
    return list(query.order_by("id")[:limit])


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
