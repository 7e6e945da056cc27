"""Reads of rooms and messages. Nothing here writes."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet, Subquery

from chat.models import Message, Room

# What a slug may look like; anything else cannot name a room, so it is
# answered "no such room" without a query (and never reaches the database).
_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,100}")


@dataclass(frozen=True)
class RoomState:
    """What a socket's `welcome` needs: recent history and the newest id."""

    messages: list[Message]
    last_id: int | None


def visible_rooms(*, user: AbstractBaseUser) -> QuerySet[Room]:
    """Rooms this user may join: every public room, and private ones they belong to."""
    return Room.objects.filter(Q(private=False) | Q(members=user)).distinct().order_by("slug")


def room_by_slug(*, slug: str) -> Room | None:
    if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
        return None
    return Room.objects.filter(slug=slug).first()


def can_join(*, room: Room, user: AbstractBaseUser) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    return not room.private or room.members.filter(pk=user.pk).exists()


def _live(room: Room) -> QuerySet[Message]:
    return Message.objects.filter(room=room, deleted_at__isnull=True).select_related("author")


def last_message_id(*, room: Room) -> int | None:
    """The newest id in the room, deleted messages included (ids are the resume cursor)."""
    return Message.objects.filter(room=room).order_by("-id").values_list("id", flat=True).first()


def room_state(*, room: Room, history: int) -> RoomState:
    """The last `history` live messages, oldest first, and the newest id; one query when there are any."""
    if not history:
        return RoomState(messages=[], last_id=last_message_id(room=room))
    newest = Message.objects.filter(room=room).order_by("-id").values("id")[:1]
    rows = list(_live(room).annotate(newest_id=Subquery(newest)).order_by("-id")[:history])
    # No live message: the room is empty, or holds only deleted ones.
    last_id = rows[0].newest_id if rows else last_message_id(room=room)
    rows.reverse()
    return RoomState(messages=rows, last_id=last_id)


def joinable_room(*, slug: str, user: AbstractBaseUser) -> tuple[Room | None, bool]:
    """The room a socket asks for by slug (None if there is none), and whether `user` may join it."""
    room = room_by_slug(slug=slug)
    return room, room is not None and can_join(room=room, user=user)


def history(*, room: Room, limit: int) -> list[Message]:
    """The last `limit` messages, oldest first."""
    rows = list(_live(room).order_by("-id")[:limit])
    rows.reverse()
    return rows


def messages_after(
    *,
    room: Room,
    after: int,
    limit: int,
    skip: tuple[int, int] | None = None,
    up_to: int | None = None,
) -> list[Message]:
    """Messages with id > `after`, ascending, at most `limit`.

    `skip=(low, high)` leaves out ids in (low, high]: those a socket already
    delivered live. `up_to` stops at that id.
    """
    query = _live(room).filter(id__gt=after)
    if skip is not None and skip[1] > skip[0]:
        query = query.exclude(Q(id__gt=skip[0]) & Q(id__lte=skip[1]))
    if up_to is not None:
        query = query.filter(id__lte=up_to)
    return list(query.order_by("id")[:limit])


def history_page(*, room: Room, limit: int, before: int | None = None) -> tuple[list[Message], int | None]:
    """One page of history, newest first, and the cursor for the next page."""
    query = _live(room)
    if before is not None:
        query = query.filter(id__lt=before)
    rows = list(query.order_by("-id")[: limit + 1])
    next_before = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_before


def message_by_client_id(*, room: Room, author: AbstractBaseUser, client_id: str) -> Message | None:
    return (
        Message.objects.filter(room=room, author=author, client_id=client_id).select_related("author").first()
    )
