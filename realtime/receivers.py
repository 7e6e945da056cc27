"""Signal receivers: thin, each hands over to a service."""

from __future__ import annotations

from django.db import connections

from realtime.protocol import CloseReason
from realtime.services import disconnect_user


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


def close_request_connections(sender, **kwargs) -> None:
    """Close the database connections an HTTP request opened, whatever CONN_MAX_AGE says.

    Under ASGI, Django runs each request's sync code in a thread (and context)
    of its own, so a connection kept for reuse is never reused: it stays open
    until garbage collection finds it. With the default DATABASE_CONN_MAX_AGE
    a worker held 75 idle connections after 480 publish requests, near
    PostgreSQL's default max_connections of 100. Django's docs say to disable
    persistent connections under ASGI; socket handlers, which all share one
    thread (channels' database_sync_to_async), keep theirs and reuse it.
    """
    connections.close_all()
