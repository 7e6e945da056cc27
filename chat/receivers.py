"""Signal receivers: thin, each hands over to a service.

Losing access to a private room must close the user's sockets there however
it happens in code, so these listen to the relation rather than to one path:

- `m2m_changed` on `Room.members`: `room.members.remove()`, `.clear()` and
  `.set()`, and the same from the user's side (`user.chat_rooms.remove()`),
  which is what `chat.services.remove_members` calls. Django sends it inside
  the method's own transaction, so the access version rises in the same
  commit as the removal. (The through table is auto-created: Django sends no
  save or delete signals for its rows, so those cannot be listened to.)
- a room saved private that was public (`pre_save`/`post_save` on Room).

The admin's members inline deletes through rows directly, which sends no
signal: `chat.admin.RoomAdmin.save_formset` calls the service itself. A
queryset `delete()` or `update()` on the through table, or on Room, is out
of reach, like any queryset write.
"""

from __future__ import annotations

from chat import services
from chat.models import Room

Membership = Room.members.through


def _pairs(instance, reverse: bool, pk_set) -> list[tuple[int, int]]:
    """(room id, user id) pairs that exist now among those an m2m call names."""
    if reverse:  # instance is a user; pk_set room ids
        rows = Membership.objects.filter(user_id=instance.pk)
        if pk_set is not None:
            rows = rows.filter(room_id__in=pk_set)
    else:  # instance is a room; pk_set user ids
        rows = Membership.objects.filter(room_id=instance.pk)
        if pk_set is not None:
            rows = rows.filter(user_id__in=pk_set)
    return list(rows.values_list("room_id", "user_id"))


def members_changed(sender, instance, action, reverse, pk_set, **kwargs) -> None:
    if action in ("pre_remove", "pre_clear"):
        # Who is actually a member now: naming a non-member removes nothing.
        instance._relay_removing = _pairs(instance, reverse, pk_set if action == "pre_remove" else None)
    elif action in ("post_remove", "post_clear"):
        pairs = getattr(instance, "_relay_removing", None) or []
        instance._relay_removing = None
        by_room: dict[int, list[int]] = {}
        for room_id, user_id in pairs:
            by_room.setdefault(room_id, []).append(user_id)
        for room_id, user_ids in by_room.items():
            services.revoke_access(room_id=room_id, user_ids=user_ids)


def room_saving(sender, instance: Room, raw=False, update_fields=None, **kwargs) -> None:
    instance._relay_made_private = False
    if raw or instance.pk is None or instance._state.adding or not instance.private:
        return
    if update_fields is not None and "private" not in update_fields:
        return
    stored = Room.objects.filter(pk=instance.pk).values_list("private", flat=True).first()
    instance._relay_made_private = stored is False


def room_saved(sender, instance: Room, raw=False, **kwargs) -> None:
    if getattr(instance, "_relay_made_private", False):
        instance._relay_made_private = False
        services.revoke_non_members(room=instance)
