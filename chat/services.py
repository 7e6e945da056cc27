"""Writes to chat rooms. Every message, whoever posts it, goes through `post_message`.

Ordering: the contract promises that ids increase in commit order within one
room, so a client can resume from the last id it saw. `post_message` locks
the room row (`SELECT ... FOR UPDATE`) before it inserts, so writers to one
room commit one after another and a later id never commits before an earlier
one. Each push carries the room's previous id (`prev_id`), which lets a socket
notice a push that is late or lost and read the gap from the database.
SQLite (local development only) allows one writer at a time, which gives the
same order.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from chat import selectors
from chat.models import Message, Room
from chat.serializers import message_dict
from realtime.fanout.push import push_after_commit
from realtime.protocol import MAX_CLIENT_ID_LENGTH, Event, room_group

# ValidationError codes, so callers can map them (the socket: `too_large` for
# an over-long body, `invalid_message` for everything else).
BODY_TOO_LONG = "too_long"
BODY_EMPTY = "empty"
INVALID = "invalid"


def _invalid(field: str, detail: str, code: str = INVALID) -> ValidationError:
    return ValidationError({field: ValidationError(detail, code=code)})


def _clean_body(body: object) -> str:
    if not isinstance(body, str):
        raise _invalid("body", "must be a string")
    body = body.strip()
    if not body:
        raise _invalid("body", "must not be empty", BODY_EMPTY)
    if len(body) > settings.CHAT_MAX_BODY:
        raise _invalid("body", f"at most {settings.CHAT_MAX_BODY} characters", BODY_TOO_LONG)
    if "\x00" in body:
        raise _invalid("body", "must not contain NUL characters")
    return body


def _clean_client_id(client_id: object) -> str | None:
    if client_id is None:
        return None
    if (
        not isinstance(client_id, str)
        or not 1 <= len(client_id) <= MAX_CLIENT_ID_LENGTH
        or "\x00" in client_id
    ):
        raise _invalid("client_id", f"a string of 1..{MAX_CLIENT_ID_LENGTH} characters")
    return client_id


def is_too_long(exc: ValidationError) -> bool:
    """True when `post_message` refused the body for its length alone."""
    errors = exc.error_dict.get("body", []) if hasattr(exc, "error_dict") else exc.error_list
    return any(error.code == BODY_TOO_LONG for error in errors)


@transaction.atomic
def post_message(
    *,
    room: Room,
    author: AbstractBaseUser | None,
    body: str,
    client_id: str | None = None,
) -> tuple[Message, bool]:
    """Store a message and push it to the room after commit.

    `author=None` is a system message. Returns (message, created); a
    `client_id` this author already used in this room returns the original
    with created=False and pushes nothing. Raises ValidationError for a bad
    body or client_id, PermissionDenied when the author may not post here.
    """
    body = _clean_body(body)
    client_id = _clean_client_id(client_id)
    # The lock that orders writers to this room (see the module docstring).
    locked = Room.objects.select_for_update().get(pk=room.pk)
    if author is not None:
        if not selectors.can_join(room=locked, user=author):
            raise PermissionDenied("not a member of this room")
        if client_id is not None:
            original = selectors.message_by_client_id(room=locked, author=author, client_id=client_id)
            if original is not None:
                return original, False
    previous = selectors.last_message_id(room=locked)
    try:
        # A savepoint, so a duplicate that slipped past the check above (SQLite
        # has no row locks) leaves the outer transaction usable.
        with transaction.atomic():
            message = Message.objects.create(
                room=locked, author=author, body=body, client_id=client_id, created_at=timezone.now()
            )
    except IntegrityError:
        if author is None or client_id is None:
            raise
        original = selectors.message_by_client_id(room=locked, author=author, client_id=client_id)
        if original is None:
            raise
        return original, False
    push_after_commit(
        [
            (
                room_group(locked.pk),
                {
                    "type": Event.MESSAGE,
                    "message": message_dict(message, room_slug=locked.slug),
                    "prev_id": previous,
                    # Read under the room's lock: a removal that committed
                    # before this post shows here (see revoke_access).
                    "access_version": locked.access_version,
                },
            )
        ]
    )
    return message, True


@transaction.atomic
def delete_message(*, message: Message, by: AbstractBaseUser | None = None) -> bool:
    """Flag a message deleted and push `message_deleted` to its room after commit.

    Returns False (and pushes nothing) when it was already deleted.
    """
    changed = Message.objects.filter(pk=message.pk, deleted_at__isnull=True).update(
        deleted_at=timezone.now(), deleted_by=by
    )
    if not changed:
        return False
    message.refresh_from_db(fields=["deleted_at", "deleted_by"])
    push_after_commit([(room_group(message.room_id), {"type": Event.MESSAGE_DELETED, "id": message.pk})])
    return True


def delete_messages(*, messages: Iterable[Message], by: AbstractBaseUser | None = None) -> int:
    """Delete several messages, each through `delete_message`; returns how many changed."""
    with transaction.atomic():
        return sum(delete_message(message=m, by=by) for m in messages)


@transaction.atomic
def create_room(
    *,
    slug: str,
    title: str,
    private: bool = False,
    created_by: AbstractBaseUser | None = None,
    members: Iterable[AbstractBaseUser] = (),
) -> Room:
    room = Room(slug=slug, title=title, private=private, created_by=created_by)
    room.full_clean()
    room.save()
    add_members(room=room, users=members)
    return room


@transaction.atomic
def add_members(*, room: Room, users: Iterable[AbstractBaseUser]) -> None:
    users = list(users)
    if users:
        room.members.add(*users)


@transaction.atomic
def remove_members(*, room: Room, users: Iterable[AbstractBaseUser]) -> None:
    users = list(users)
    if users:
        room.members.remove(*users)


def _bump_access_version(*, room_id: int) -> int | None:
    """Raise a private room's access version; the new value, or None for a public (or missing) room.

    The UPDATE takes the room's row lock until commit, so `post_message`, which
    locks the row first, either commits before the change or reads the new value.
    """
    if not Room.objects.filter(pk=room_id, private=True).update(access_version=F("access_version") + 1):
        return None
    return Room.objects.filter(pk=room_id).values_list("access_version", flat=True).get()


@transaction.atomic
def revoke_access(*, room_id: int, user_ids: Iterable[int]) -> None:
    """These users lost access to the room: after commit, their sockets in it close with 4403.

    Called for every removal of a private room's member, however it was made
    (chat/receivers.py). A public room admits everyone, so removing a member of
    one changes nothing. The event goes to the room's group, which every worker
    with a socket in the room hears; it carries the new access version, so a
    socket admitted after the removal (a re-added member) ignores it.
    """
    users = sorted(set(user_ids))
    if not users:
        return
    version = _bump_access_version(room_id=room_id)
    if version is not None:
        push_after_commit([(room_group(room_id), {"type": Event.REVOKE, "version": version, "users": users})])


@transaction.atomic
def revoke_non_members(*, room: Room) -> None:
    """The room was made private: after commit, the sockets of everyone not a member close with 4403."""
    version = _bump_access_version(room_id=room.pk)
    if version is None:
        return
    members = sorted(Room.members.through.objects.filter(room_id=room.pk).values_list("user_id", flat=True))
    push_after_commit([(room_group(room.pk), {"type": Event.REVOKE, "version": version, "members": members})])


@transaction.atomic
def seed_demo_rooms() -> list[Room]:
    """The demo rooms: public `lobby`, and private `alice-bob` for alice and bob. Safe to run twice."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    lobby, _ = Room.objects.get_or_create(slug="lobby", defaults={"title": "Lobby", "private": False})
    pair, _ = Room.objects.get_or_create(
        slug="alice-bob", defaults={"title": "Alice and Bob", "private": True}
    )
    add_members(room=pair, users=User.objects.filter(username__in=["alice", "bob"]))
    return [lobby, pair]
