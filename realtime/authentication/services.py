"""Writes of the real-time layer: closing a user's sockets, deactivating users.

The close goes through the channel layer to the user's group, which every
authenticated socket joins (realtime.consumers), so it reaches the sockets
on every worker; like every push it is sent only once the transaction commits.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from realtime.fanout.push import push_after_commit
from realtime.protocol import CloseReason, Event, user_group


@transaction.atomic
def disconnect_user(*, user: AbstractBaseUser, reason: CloseReason) -> None:
    """Close every socket of this user with 4401 and `reason`."""
    disconnect_users(user_ids=[user.pk], reason=reason)


@transaction.atomic
def disconnect_users(*, user_ids: Iterable[int], reason: CloseReason) -> None:
    push_after_commit(
        (user_group(uid), {"type": Event.DISCONNECT, "reason": str(CloseReason(reason))})
        for uid in sorted(set(user_ids))
    )


@transaction.atomic
def deactivate_users(*, users: Iterable[AbstractBaseUser]) -> int:
    """Deactivate these users and close their sockets; returns how many were active."""
    ids = [u.pk for u in users]
    changed = list(get_user_model().objects.filter(pk__in=ids, is_active=True).values_list("pk", flat=True))
    get_user_model().objects.filter(pk__in=changed).update(is_active=False)
    # Sessions of an inactive user stop working by themselves (ModelBackend
    # refuses inactive users); tokens are refused at the next verification.
    disconnect_users(user_ids=ids, reason=CloseReason.DEACTIVATED)
    return len(changed)
