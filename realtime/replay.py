"""The replay read both streams share: rows after a socket's cursor, less what it already has.

A socket resumes from the last id it saw: a replay skips the ids it already
sent live, and a gap fill stops where the live stream picks up (docs/protocol.md,
"/ws/notifications/"). Chat messages and notifications answer this the same way;
their selectors choose the rows (a room's live messages, a user's inbox) and
pass the window on.
"""

from __future__ import annotations

from typing import Required, TypedDict, TypeVar

from django.db.models import Model, Q, QuerySet

_Row = TypeVar("_Row", bound=Model)


class Window(TypedDict, total=False):
    """Which rows after a cursor a socket asks for (see `rows_after`)."""

    after: Required[int]
    limit: Required[int]
    skip: tuple[int, int] | None
    up_to: int | None


def rows_after(
    query: QuerySet[_Row],
    *,
    after: int,
    limit: int,
    skip: tuple[int, int] | None = None,
    up_to: int | None = None,
) -> list[_Row]:
    """Rows of `query` with id > `after`, ascending, at most `limit`.

    `skip=(low, high)` leaves out ids in (low, high]: those a socket already
    delivered live. `up_to` stops at that id.
    """
    query = query.filter(id__gt=after)
    if skip is not None and skip[1] > skip[0]:
        query = query.exclude(Q(id__gt=skip[0]) & Q(id__lte=skip[1]))
    if up_to is not None:
        query = query.filter(id__lte=up_to)
    return list(query.order_by("id")[:limit])
