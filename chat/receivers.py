"""Signal receivers: thin, each hands over to a service.

Losing access to a private room must close the user's sockets there however
it happens, so these listen to the rows rather than to one code path:

- a membership row deleted: `room.members.remove()`, `.clear()` and `.set()`
  (Django deletes the through rows with a queryset whose per-row signals fire
  because receivers exist), the admin's members inline (it deletes the row
  itself, which `m2m_changed` never hears), deleting the user, a queryset
  `delete()` on the through model;
- a membership row changed to another user or room (the admin inline again);
- a room saved private that was public.

A queryset `update()` on either table sends no signal and is out of reach.
"""

from __future__ import annotations

from django.db.models import QuerySet

from chat import services
from chat.models import Room

Membership = Room.members.through


def _deleting_the_room(origin) -> bool:
    # The room itself is being deleted: its sockets have nothing left to read,
    # and one revoke per member row would cost a write each.
    return isinstance(origin, Room) or (isinstance(origin, QuerySet) and origin.model is Room)


def membership_deleted(sender, instance, origin=None, **kwargs) -> None:
    if not _deleting_the_room(origin):
        services.revoke_access(room_id=instance.room_id, user_ids=[instance.user_id])


def membership_changing(sender, instance, raw=False, **kwargs) -> None:
    instance._relay_previous = None
    if raw or instance.pk is None:
        return
    previous = Membership.objects.filter(pk=instance.pk).values_list("room_id", "user_id").first()
    if previous is not None and previous != (instance.room_id, instance.user_id):
        instance._relay_previous = previous


def membership_changed(sender, instance, raw=False, **kwargs) -> None:
    previous = getattr(instance, "_relay_previous", None)
    if previous is not None:
        instance._relay_previous = None
        services.revoke_access(room_id=previous[0], user_ids=[previous[1]])


def room_saving(sender, instance: Room, raw=False, update_fields=None, **kwargs) -> None:
    instance._relay_made_private = False
    if raw or instance.pk is None or instance._state.adding or not instance.private:
        return
    if update_fields is not None and "private" not in update_fields:
        return
    stored = Room.objects.filter(pk=instance.pk).values_list("private", flat=True).first()
    instance._relay_made_private = stored is False


def room_saved(sender, instance: Room, **kwargs) -> None:
    if getattr(instance, "_relay_made_private", False):
        instance._relay_made_private = False
        services.revoke_non_members(room=instance)
