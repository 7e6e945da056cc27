"""Signal receivers: thin, each hands over to a service."""

from __future__ import annotations

from realtime.protocol import CloseReason
from realtime.services import disconnect_user


def close_sockets_on_logout(sender, request, user, **kwargs) -> None:
    if user is not None:  # logging out an anonymous session sends user=None
        disconnect_user(user=user, reason=CloseReason.LOGGED_OUT)
