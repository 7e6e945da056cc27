"""Signal receivers: thin, each hands over to a service."""

from __future__ import annotations

from realtime.authentication.services import disconnect_user
from realtime.protocol import CloseReason


def close_sockets_on_logout(sender, request, user, **kwargs) -> None:
    if user is not None:  # logging out an anonymous session sends user=None
        disconnect_user(user=user, reason=CloseReason.LOGGED_OUT)


def note_deactivation(sender, instance, raw=False, update_fields=None, **kwargs) -> None:
    """Before a user is saved inactive: was it active until now? (Compared with the stored row.)"""
    instance._relay_deactivated = False
    if raw or instance.pk is None or instance._state.adding or instance.is_active:
        return
    if update_fields is not None and "is_active" not in update_fields:
        return  # e.g. login's last_login: is_active is not written
    stored = sender._base_manager.filter(pk=instance.pk).values_list("is_active", flat=True).first()
    instance._relay_deactivated = bool(stored)


def close_sockets_on_deactivation(sender, instance, raw=False, **kwargs) -> None:
    """Any save that deactivates a user closes their sockets (4401) after commit, on every worker."""
    if getattr(instance, "_relay_deactivated", False):
        instance._relay_deactivated = False
        disconnect_user(user=instance, reason=CloseReason.DEACTIVATED)
