"""What the adapter changes in uvicorn: a deadline on request heads in its h11 protocol.

Imported only under uvicorn, by `realtime.adapter.install()`.
"""

from __future__ import annotations

import h11
from django.conf import settings
from uvicorn.protocols.http.h11_impl import H11Protocol


def bound_request_heads() -> None:
    """A deadline on uvicorn's h11 protocol: a whole request head within HTTP_HEADER_TIMEOUT_SECONDS.

    Armed when the connection opens and again after each response (uvicorn's
    own keep-alive timer starts only then and is cancelled by any byte);
    disarmed as soon as h11 has parsed a request's head. httptools is not
    installed (requirements.txt), so uvicorn's "auto" picks h11.
    """

    if getattr(H11Protocol, "relay_header_deadline", False):
        return
    connection_made = H11Protocol.connection_made
    connection_lost = H11Protocol.connection_lost
    handle_events = H11Protocol.handle_events
    on_response_complete = H11Protocol.on_response_complete

    def disarm(protocol) -> None:
        timer = protocol.__dict__.pop("_relay_header_timer", None)
        if timer is not None:
            timer.cancel()

    def expire(protocol) -> None:
        protocol.__dict__.pop("_relay_header_timer", None)
        # IDLE: h11 has not seen a whole request head since the timer was armed.
        if protocol.conn.their_state is h11.IDLE and not protocol.transport.is_closing():
            protocol.transport.close()

    def arm(protocol) -> None:
        disarm(protocol)
        protocol._relay_header_timer = protocol.loop.call_later(
            settings.HTTP_HEADER_TIMEOUT_SECONDS, expire, protocol
        )

    def relay_connection_made(self, transport):
        connection_made(self, transport)
        arm(self)

    def relay_connection_lost(self, exc):
        disarm(self)
        connection_lost(self, exc)

    def relay_handle_events(self):
        handle_events(self)
        if self.conn.their_state is not h11.IDLE:
            disarm(self)

    def relay_on_response_complete(self):
        if not self.transport.is_closing():
            arm(self)
        on_response_complete(self)

    H11Protocol.connection_made = relay_connection_made
    H11Protocol.connection_lost = relay_connection_lost
    H11Protocol.handle_events = relay_handle_events
    H11Protocol.on_response_complete = relay_on_response_complete
    H11Protocol.relay_header_deadline = True
