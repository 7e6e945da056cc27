"""Writes to inboxes. Every notification, whoever sends it, goes through `notify`.

Ordering: the contract promises that ids increase in commit order within one
inbox, so a client can resume from the last id it saw. A sequence alone does
not give that (two transactions can take ids 10 and 11 and commit 11 first),
so writers to one inbox are serialized with PostgreSQL advisory locks held
until commit: one per recipient for small sends, one table-wide lock for big
ones (a transaction cannot hold thousands of locks). SQLite allows a single
writer at a time, which orders inserts by itself.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Required, TypedDict, Unpack

import orjson
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.utils import timezone

from notifications.models import Level, Notification
from notifications.selectors import unread_count
from notifications.serializers import notification_dict
from realtime.fanout.push import push_after_commit, push_each_after_commit
from realtime.protocol import Event, user_group

User = get_user_model()

# Advisory lock namespace (first key) for inbox writes; second key is the user id.
INBOX_LOCK_NS = 7301
ALL_INBOXES = 0
# Above this many recipients one table-wide lock replaces per-user locks.
PER_USER_LOCK_MAX = 64
MAX_DATA_BYTES = 16 * 1024

# A notification's `url` becomes a link on the pages (static/js/inbox.js applies the same rule).
# Browsers read a backslash as a slash and drop tabs and newlines inside a URL, so
# `/\evil.example` and `/\t/evil.example` are `//evil.example`: a link to another site.
_ABSOLUTE = re.compile(r"https?://[^/\\]", re.IGNORECASE)
_UNSAFE_CHARACTERS = re.compile(r"[\\\x00-\x1f\x7f-\x9f]")  # backslash, C0 and C1 controls, DEL


def is_safe_link(url: str) -> bool:
    """An absolute http(s) URL, or a path that starts with exactly one `/`."""
    if _UNSAFE_CHARACTERS.search(url):
        return False
    if url.startswith("/"):
        return not url.startswith("//")
    return _ABSOLUTE.match(url) is not None


Users = AbstractBaseUser | Iterable[AbstractBaseUser] | QuerySet | None


class Content(TypedDict, total=False):
    """What a notification says, however it is addressed; `_validate` holds the rules."""

    title: Required[str]
    body: str
    level: str
    url: str
    data: dict[str, Any] | None


def content_of(values: Mapping[str, Any]) -> Content:
    """The content fields among these values (a form's cleaned data, a command's options)."""
    return Content(**{name: values[name] for name in Content.__annotations__ if name in values})


class UnknownRecipients(ValidationError):
    """Names that match no user or group; nothing was sent."""

    def __init__(self, *, users: list[str], groups: list[str]) -> None:
        self.unknown_users = users
        self.unknown_groups = groups
        errors = {}
        if users:
            errors["users"] = f"unknown users: {', '.join(users)}"
        if groups:
            errors["groups"] = f"unknown groups: {', '.join(groups)}"
        super().__init__(errors)


def _recipient_ids(*, users: Users, groups: Iterable[Group | str] | None, everyone: bool) -> list[int]:
    active = User.objects.filter(is_active=True)
    if everyone:
        return list(active.order_by("pk").values_list("pk", flat=True))
    ids: set[int] = set()
    if isinstance(users, QuerySet):
        ids.update(users.filter(is_active=True).values_list("pk", flat=True))
    elif isinstance(users, AbstractBaseUser):
        if users.is_active:
            ids.add(users.pk)
    elif users is not None:
        ids.update(user.pk for user in users if user.is_active)
    if groups:
        group_list = list(groups)
        names = {g for g in group_list if isinstance(g, str)}
        known = dict(Group.objects.filter(name__in=names).values_list("name", "pk"))
        missing = sorted(names - known.keys())
        if missing:
            raise UnknownRecipients(users=[], groups=missing)
        group_ids = {g.pk for g in group_list if isinstance(g, Group)} | set(known.values())
        ids.update(active.filter(groups__in=group_ids).values_list("pk", flat=True))
    return sorted(ids)


def users_named(names: Iterable[str]) -> QuerySet:
    """The users with these usernames; UnknownRecipients if any is missing."""
    wanted = sorted(set(names))
    users = User.objects.filter(username__in=wanted)
    missing = sorted(set(wanted) - set(users.values_list("username", flat=True)))
    if missing:
        raise UnknownRecipients(users=missing, groups=[])
    return users


def _validate(
    *, title: str, body: str = "", level: str = Level.INFO, url: str = "", data: Any = None
) -> dict[str, Any]:
    errors: dict[str, str] = {}
    title = (title or "").strip()
    if not title:
        errors["title"] = "required"
    elif len(title) > 200:
        errors["title"] = "at most 200 characters"
    if level not in Level.values:
        errors["level"] = f"one of {', '.join(Level.values)}"
    url = (url or "").strip()
    if len(url) > 2000:
        errors["url"] = "at most 2000 characters"
    elif url and not is_safe_link(url):
        # The pages render it as a link: no javascript: or data: URLs, nothing that leaves the site unseen.
        errors["url"] = (
            "must be a path starting with a single / or an http(s) URL, "
            "with no backslash or control character"
        )
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors["data"] = "must be a JSON object"
    else:
        try:
            if len(orjson.dumps(data)) > MAX_DATA_BYTES:
                errors["data"] = f"at most {MAX_DATA_BYTES} bytes of JSON"
        except TypeError:
            errors["data"] = "must be JSON-serializable"
    for name, value in (("title", title), ("body", body or "")):
        if "\x00" in value:
            errors[name] = "must not contain NUL characters"
    if errors:
        raise ValidationError(errors)
    return {"title": title, "body": body or "", "level": level, "url": url, "data": data}


def _lock_inboxes(user_ids: list[int]) -> None:
    """Serialize writers to these inboxes until the transaction ends."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        if len(user_ids) > PER_USER_LOCK_MAX:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [INBOX_LOCK_NS, ALL_INBOXES])
            return
        cursor.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", [INBOX_LOCK_NS, ALL_INBOXES])
        # Sorted, so two writers never wait on each other in a cycle.
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, uid) FROM unnest(%s::int[]) AS uid ORDER BY uid",
            [INBOX_LOCK_NS, user_ids],
        )


def _latest_ids(user_ids: list[int]) -> dict[int, int | None]:
    latest = Notification.objects.filter(recipient=OuterRef("pk")).order_by("-id").values("id")[:1]
    rows = User.objects.filter(pk__in=user_ids).annotate(last=Subquery(latest))
    return dict(rows.values_list("pk", "last"))


@transaction.atomic
def notify(
    *,
    users: Users = None,
    groups: Iterable[Group | str] | None = None,
    everyone: bool = False,
    **content: Unpack[Content],
) -> list[Notification]:
    """Store one notification per active recipient and push each after commit.

    Recipients are the union of `users` (a user, users or a queryset),
    members of `groups` (Group objects or names) and, with `everyone`, every
    active user. `content` is the title (required), body, level, url and data.
    Returns the stored notifications.
    """
    fields = _validate(**content)
    user_ids = _recipient_ids(users=users, groups=groups, everyone=everyone)
    if not user_ids:
        return []
    _lock_inboxes(user_ids)
    previous = _latest_ids(user_ids)
    now = timezone.now()
    batch = uuid.uuid4()
    rows = [Notification(recipient_id=uid, batch=batch, created_at=now, **fields) for uid in user_ids]
    # One INSERT whatever the number of recipients; ids come back from RETURNING.
    created = Notification.objects.bulk_create(rows)
    # Every row is the same notification but for its id, and each inbox has
    # its own previous id: the shared part is built once (for a big send, it
    # travels once per batch rather than once per recipient).
    shared = {**notification_dict(created[0]), "id": None}
    push_each_after_commit(
        {"type": Event.NOTIFICATION, "notification": shared, "prev_id": None},
        (
            (
                user_group(row.recipient_id),
                {"notification": {"id": row.id}, "prev_id": previous.get(row.recipient_id)},
            )
            for row in created
        ),
    )
    return created


@transaction.atomic
def notify_named(
    *,
    usernames: Iterable[str] = (),
    group_names: Iterable[str] = (),
    everyone: bool = False,
    **content: Unpack[Content],
) -> list[Notification]:
    """`notify` for recipients given by name, as the publish API gets them.

    Every problem is reported at once, before anything is stored: field
    errors, and every unknown user and group by name (UnknownRecipients when
    those are the only problem).
    """
    errors: dict[str, list[str]] = {}
    try:
        _validate(**content)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    wanted_users, wanted_groups = sorted(set(usernames)), sorted(set(group_names))
    users = User.objects.filter(username__in=wanted_users)
    missing_users = sorted(set(wanted_users) - set(users.values_list("username", flat=True)))
    known_groups = Group.objects.filter(name__in=wanted_groups).values_list("name", flat=True)
    missing_groups = sorted(set(wanted_groups) - set(known_groups))
    if missing_users or missing_groups:
        unknown = UnknownRecipients(users=missing_users, groups=missing_groups)
        if not errors:
            raise unknown
        errors.update(unknown.message_dict)
    if errors:
        raise ValidationError(errors)
    return notify(
        users=users if wanted_users else None,
        groups=wanted_groups,
        everyone=everyone,
        **content,
    )


@transaction.atomic
def mark_read(*, user: AbstractBaseUser, ids: Iterable[int]) -> int:
    """Mark these of the user's notifications read; returns the unread count.

    Every socket of the user gets a `read` frame, even when nothing changed,
    so the one that asked always has its answer.
    """
    wanted = sorted(set(ids))
    if len(wanted) > settings.WS_MAX_IDS_PER_FRAME:
        raise ValidationError({"ids": f"at most {settings.WS_MAX_IDS_PER_FRAME} ids at once"})
    unread = Notification.objects.filter(recipient=user, id__in=wanted, read_at__isnull=True)
    changed = sorted(unread.values_list("id", flat=True))
    if changed:
        Notification.objects.filter(id__in=changed).update(read_at=timezone.now())
    count = unread_count(user=user)
    _push_read(user, ids=changed, everything=False, unread=count)
    return count


@transaction.atomic
def mark_all_read(*, user: AbstractBaseUser) -> int:
    """Mark every notification of the user read; returns the unread count (0)."""
    Notification.objects.filter(recipient=user, read_at__isnull=True).update(read_at=timezone.now())
    count = unread_count(user=user)
    _push_read(user, ids=[], everything=True, unread=count)
    return count


def _push_read(user: AbstractBaseUser, *, ids: list[int], everything: bool, unread: int) -> None:
    push_after_commit(
        [
            (
                user_group(user.pk),
                {"type": Event.READ, "ids": ids, "all": everything, "unread": unread},
            )
        ]
    )
