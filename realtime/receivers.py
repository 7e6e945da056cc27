"""Signal receivers: thin, each hands over to a service."""

from __future__ import annotations

from django.db import connections

from realtime.protocol import CloseReason
from realtime.services import disconnect_user


def close_sockets_on_logout(sender, request, user, **kwargs) -> None:
    if user is not None:  # logging out an anonymous session sends user=None
        disconnect_user(user=user, reason=CloseReason.LOGGED_OUT)


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
