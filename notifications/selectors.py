"""Reads of notifications. Nothing here writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection

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


def inbox_states(user_ids: list[int]) -> list[InboxState]:
    """`inbox_state` of each user, in order, in one query.

    Every socket asks this before its `welcome`, so sockets arriving together
    ask it together (realtime.db.batched), in one hand-written query: two index
    lookups per user, where the ORM's two querysets per user cost more CPU to
    compile than to run. `tests/test_selectors.py` holds it to `inbox_state`.
    """
    wanted = sorted(set(user_ids))
    with connection.cursor() as cursor:
        cursor.execute(_states_sql(len(wanted)), wanted)
        found = {row[0]: InboxState(unread=row[1], last_id=row[2]) for row in cursor.fetchall()}
    empty = InboxState(unread=0, last_id=None)
    return [found.get(user_id, empty) for user_id in user_ids]


def _states_sql(count: int) -> str:
    """The welcome's query for `count` users, with the models' own table names."""
    quote = connection.ops.quote_name
    users = get_user_model()
    table, user_table = quote(Notification._meta.db_table), quote(users._meta.db_table)
    recipient = quote(Notification._meta.get_field("recipient").column)
    read_at, user_id = quote(Notification._meta.get_field("read_at").column), quote(users._meta.pk.column)
    ids = ", ".join(["%s"] * count)
    # Names come from the models' metadata, never from input; values are parameters.
    return f"""
        SELECT u.{user_id},
               (SELECT COUNT(*) FROM {table} n WHERE n.{recipient} = u.{user_id} AND n.{read_at} IS NULL),
               (SELECT MAX(n.id) FROM {table} n WHERE n.{recipient} = u.{user_id})
        FROM {user_table} u WHERE u.{user_id} IN ({ids})
    """  # noqa: S608


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
