"""Reads of rooms and messages. Nothing here writes."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Unpack

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from chat.models import Message, Room
from realtime.protocol import iso
from realtime.replay import Window, rows_after

# What a slug may look like; anything else cannot name a room, so it is
# answered "no such room" without a query (and never reaches the database).
_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,100}")


@dataclass(frozen=True)
class RoomState:
    """What a socket's `welcome` needs: recent history (wire `message` dicts) and the newest id."""

    messages: list[dict[str, Any]]
    last_id: int | None
    # The room's access version (Room.access_version) at this read.
    access_version: int


@dataclass(frozen=True)
class Access:
    """Whether a user may read a room now, and the room's access version at that check."""

    allowed: bool
    version: int


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


def joinable_rooms(wanted: list[tuple[str, AbstractBaseUser]]) -> list[tuple[Room | None, bool]]:
    """`joinable_room` of each (slug, user), in order: one query for the rooms, one for memberships.

    The sockets joining rooms together ask this together (realtime.db.batched);
    `tests/test_selectors.py` holds it to `joinable_room`.
    """
    slugs = {slug for slug, _ in wanted if isinstance(slug, str) and _SLUG.fullmatch(slug)}
    rooms = {room.slug: room for room in Room.objects.filter(slug__in=slugs)} if slugs else {}
    members = _memberships({room.pk for room in rooms.values() if room.private}, [user for _, user in wanted])
    answers: list[tuple[Room | None, bool]] = []
    for slug, user in wanted:
        room = rooms.get(slug) if slug in slugs else None
        if room is None:
            answers.append((None, False))
            continue
        # Each socket holds a room object of its own, as it did when each read its own.
        answers.append((copy.copy(room), _may_read(room.pk, room.private, user, members)))
    return answers


def _memberships(private_ids: set[int], users: list[AbstractBaseUser]) -> set[tuple[int, int]]:
    """(room id, user id) of each of `users` who is a member of one of the private rooms, in one query."""
    user_ids = {user.pk for user in users if user.is_authenticated}
    if not private_ids or not user_ids:
        return set()
    through = Room.members.through.objects.filter(room_id__in=private_ids, user_id__in=user_ids)
    return set(through.values_list("room_id", "user_id"))


def _may_read(room_id: int, private: bool, user: AbstractBaseUser, members: set[tuple[int, int]]) -> bool:
    """`room_access`'s rule, with the memberships read for a batch (`_memberships`)."""
    return user.is_authenticated and user.is_active and (not private or (room_id, user.pk) in members)


def room_states(wanted: list[tuple[Room, int]]) -> list[RoomState]:
    """`room_state` of each (room, history), in order, read once per distinct pair.

    Sockets joining one room together (a reconnect storm, a popular room)
    share one read of its history; each was in the room's group before the
    read began (realtime.batching), so nothing committed since is missed.
    """
    states: dict[tuple[int, int], RoomState] = {}
    for room, history in wanted:
        if (room.pk, history) not in states:
            states[room.pk, history] = room_state(room=room, history=history)
    return [states[room.pk, history] for room, history in wanted]


def room_access(*, room_id: int, user: AbstractBaseUser) -> Access:
    """May `user` read the room right now? One query: the room's flag, version and the membership.

    Sockets ask this on every read of history (resume, gap fill) and when a
    push says someone lost access, not only at the handshake.
    """
    if not user.is_authenticated or not user.is_active:
        return Access(allowed=False, version=0)
    member = Room.members.through.objects.filter(room_id=OuterRef("pk"), user_id=user.pk)
    row = (
        Room.objects.filter(pk=room_id)
        .annotate(member=Exists(member))
        .values_list("private", "access_version", "member")
        .first()
    )
    if row is None:
        return Access(allowed=False, version=0)
    private, version, is_member = row
    return Access(allowed=not private or is_member, version=version)


def _live(room: Room) -> QuerySet[Message]:
    return Message.objects.filter(room=room, deleted_at__isnull=True).select_related("author")


def last_message_id(*, room: Room) -> int | None:
    """The newest id in the room, deleted messages included (ids are the resume cursor)."""
    return Message.objects.filter(room=room).order_by("-id").values_list("id", flat=True).first()


def room_state(*, room: Room, history: int) -> RoomState:
    """The last `history` live messages as wire dicts, oldest first, and the newest id.

    Every socket that joins a room asks this, so it is one hand-written query
    rather than the ORM's: compiling the equivalent queryset (a join for the
    author, a subquery for the newest id) was a quarter of a chat handshake's
    CPU in a join storm (py-spy, 1,000 users joining). `tests/test_selectors.py`
    holds it to the same answer as the ORM's `history` and `last_message_id`.
    """
    if not history:
        return RoomState(messages=[], last_id=last_message_id(room=room), access_version=_version(room))
    with connection.cursor() as cursor:
        cursor.execute(_state_sql(), [room.pk, room.pk, room.pk, history])
        rows = cursor.fetchall()
    # No live message: the room is empty, or holds only deleted ones.
    last_id = rows[0][5] if rows else last_message_id(room=room)
    version = rows[0][6] if rows else _version(room)
    messages = [
        {
            "id": row[0],
            "room": room.slug,
            "author": row[1],
            "body": row[2],
            "created_at": iso(_aware(row[3])),
            "client_id": row[4],
        }
        for row in reversed(rows)
    ]
    return RoomState(messages=messages, last_id=last_id, access_version=version)


def _version(room: Room) -> int:
    return Room.objects.filter(pk=room.pk).values_list("access_version", flat=True).first() or 0


@cache
def _state_sql() -> str:
    """The welcome's query, with the models' own table names (made once the models are loaded)."""
    quote = connection.ops.quote_name
    user_model = get_user_model()
    messages, users = quote(Message._meta.db_table), quote(user_model._meta.db_table)
    rooms = quote(Room._meta.db_table)
    username = quote(user_model._meta.get_field(user_model.USERNAME_FIELD).column)
    user_id = quote(user_model._meta.pk.column)
    # Names come from the models' metadata, never from input; values are parameters.
    return f"""
        SELECT m.id, u.{username}, m.body, m.created_at, m.client_id,
               (SELECT MAX(id) FROM {messages} WHERE room_id = %s),
               (SELECT access_version FROM {rooms} WHERE id = %s)
        FROM {messages} m LEFT OUTER JOIN {users} u ON u.{user_id} = m.author_id
        WHERE m.room_id = %s AND m.deleted_at IS NULL
        ORDER BY m.id DESC LIMIT %s
    """  # noqa: S608


def _aware(value: datetime | str) -> datetime:
    # PostgreSQL hands back an aware datetime; SQLite (development) a string in UTC.
    if isinstance(value, str):
        value = parse_datetime(value)
    return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)


def joinable_room(*, slug: str, user: AbstractBaseUser) -> tuple[Room | None, bool]:
    """The room a socket asks for by slug (None if there is none), and whether `user` may join it."""
    room = room_by_slug(slug=slug)
    return room, room is not None and can_join(room=room, user=user)


def history(*, room: Room, limit: int) -> list[Message]:
    """The last `limit` messages, oldest first."""
    rows = list(_live(room).order_by("-id")[:limit])
    rows.reverse()
    return rows


def messages_after(*, room: Room, **window: Unpack[Window]) -> list[Message]:
    """The room's messages after a socket's cursor (`realtime.replay.rows_after`)."""
    return rows_after(_live(room), **window)


def readable_messages_after(
    *, room: Room, user: AbstractBaseUser, **window: Unpack[Window]
) -> list[Message] | None:
    """`messages_after`, or None when `user` may no longer read the room (checked on every read)."""
    if not room_access(room_id=room.pk, user=user).allowed:
        return None
    return messages_after(room=room, **window)


def readable_messages_many(
    wanted: list[tuple[Room, AbstractBaseUser, Window]],
) -> list[list[Message] | None]:
    """`readable_messages_after` of each (room, user, window), in order: access in two queries, rows
    read once per distinct window.

    The sockets of a room reconnecting together (after a Redis restart, a drain) resume from the
    same last id into the same window, so they share one read (realtime.db.batched);
    `tests/test_selectors.py` holds it to `readable_messages_after`.
    """
    rooms = Room.objects.filter(pk__in={room.pk for room, _, _ in wanted})
    private = dict(rooms.values_list("pk", "private"))
    private_ids = {pk for pk, is_private in private.items() if is_private}
    members = _memberships(private_ids, [user for _, user, _ in wanted])
    reads: dict[tuple[Any, ...], list[Message]] = {}
    answers: list[list[Message] | None] = []
    for room, user, window in wanted:
        if room.pk not in private or not _may_read(room.pk, private[room.pk], user, members):
            answers.append(None)  # the room is gone, or this user may not read it
        else:
            key = (room.pk, window["after"], window["limit"], window.get("skip"), window.get("up_to"))
            if key not in reads:
                reads[key] = messages_after(room=room, **window)
            answers.append(list(reads[key]))
    return answers


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
