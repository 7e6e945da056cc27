"""Every dependency internal the adapter relies on, by what it adapts, and the start-up check.

An internal is named as it is looked up: `module:attribute.path`. `missing(part)`
imports the module and follows the path with getattr; an internal that is an
instance attribute (set in `__init__`) is looked up on a probe instance built
by the entry's `probe`. Whatever is not there is reported once per process
(`check`), by name, and that part of the adapter stays off: the application
then runs on plain ASGI for it, as it would on an unpinned version.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("realtime.adapter")


def _twisted_descriptor() -> Any:
    # An instance of the class that sets the buffer counters in __init__; a
    # truthy reactor stops it from importing (and so installing) the global one.
    from twisted.internet.abstract import FileDescriptor

    return FileDescriptor(reactor=True)


# part -> [(internal, probe or None)]. What each part does without them is in
# `WITHOUT` (the warning says it).
INTERNALS: dict[str, list[tuple[str, Callable[[], Any] | None]]] = {
    "daphne": [
        # realtime.adapter.twisted_daphne: close codes, Origin refusal, denial responses, slow-client
        # limit, header deadline.
        ("daphne.ws_protocol:WebSocketFactory.protocol", None),
        ("daphne.ws_protocol:WebSocketProtocol.handle_reply", None),
        ("daphne.ws_protocol:WebSocketProtocol.sendCloseFrame", None),
        ("daphne.ws_protocol:WebSocketProtocol.failHandshake", None),
        # The Denial Response extension: daphne's refusal, autobahn's raw write and drop.
        ("daphne.ws_protocol:WebSocketProtocol.serverReject", None),
        ("daphne.ws_protocol:WebSocketProtocol.STATE_CONNECTING", None),
        ("daphne.ws_protocol:WebSocketProtocol.sendData", None),
        ("daphne.ws_protocol:WebSocketProtocol.dropConnection", None),
        ("daphne.server:Server.create_application", None),
        ("daphne.server:serverFromString", None),
        ("daphne.ws_protocol:WebSocketProtocol.STATE_OPEN", None),
        ("daphne.ws_protocol:WebSocketProtocol.STATE_CLOSING", None),
        ("daphne.ws_protocol:WebSocketProtocol.STATE_CLOSED", None),
        ("daphne.http_protocol:HTTPFactory.protocol", None),
        ("daphne.server:Server.log_action", None),
        ("autobahn.util:encode_truncate", None),
        ("autobahn.websocket.protocol:pformat", None),
        ("autobahn.websocket.protocol:WebSocketServerProtocol._connectionMade", None),
        ("twisted.web.http:_GenericHTTPChannelProtocol", None),
        ("twisted.web.http:HTTPChannel.allHeadersReceived", None),
        ("twisted.web.http:HTTPChannel.requestDone", None),
        ("twisted.web.http:HTTPChannel.timeoutConnection", None),
        ("twisted.web.http:HTTPChannel.callLater", None),
        # realtime.adapter.writers: what Twisted holds unsent for a connection.
        ("twisted.internet.abstract:FileDescriptor.dataBuffer", None),
        ("twisted.internet.abstract:FileDescriptor.offset", None),
        ("twisted.internet.abstract:FileDescriptor._tempDataLen", _twisted_descriptor),
        ("twisted.internet.tcp:Connection.abortConnection", None),
        ("twisted.internet.asyncioreactor:AsyncioSelectorReactor", None),
    ],
    "uvicorn": [
        # realtime.adapter.uvicorn_h11: the request-head deadline.
        ("uvicorn.protocols.http.h11_impl:H11Protocol.connection_made", None),
        ("uvicorn.protocols.http.h11_impl:H11Protocol.connection_lost", None),
        ("uvicorn.protocols.http.h11_impl:H11Protocol.handle_events", None),
        ("uvicorn.protocols.http.h11_impl:H11Protocol.on_response_complete", None),
        ("h11:IDLE", None),
        # realtime.adapter.writers: the two websockets implementations' state.
        ("websockets.protocol:State.OPEN", None),
        ("uvicorn.protocols.websockets.websockets_impl:WebSocketProtocol", None),
        ("uvicorn.protocols.websockets.websockets_sansio_impl:WebSocketsSansIOProtocol", None),
    ],
    "channels_redis": [
        # realtime.adapter.pubsub_layer: the pub/sub layer's fixes.
        ("channels_redis.pubsub:RedisSingleShardConnection._ensure_redis", None),
        ("channels_redis.pubsub:RedisSingleShardConnection._ensure_receiver", None),
        ("channels_redis.pubsub:RedisSingleShardConnection.subscribe", None),
        ("channels_redis.pubsub:RedisSingleShardConnection._do_receiving", None),
        ("channels_redis.pubsub:RedisSingleShardConnection._receive_message", None),
        ("channels_redis.pubsub:RedisPubSubLoopLayer._subscribe_to_channel", None),
        ("channels_redis.pubsub:RedisPubSubChannelLayer._get_layer", None),
        ("channels_redis.utils:_wrap_close", None),
        ("redis.asyncio.client:PubSub.subscribed", None),
    ],
    "asgiref": [
        # realtime.adapter.server_loop: pushes from a database thread go to the server's loop.
        ("asgiref.sync:SyncToAsync.threadlocal", None),
    ],
}

WITHOUT = {
    "daphne": "close codes 1009/1011/1012/1013 may not reach clients, SIGTERM does not drain, no slow-client "
    "limit, no request-header deadline, no 503 refusals and Twisted's listen queue of 50; events go out "
    "through plain ASGI sends",
    "uvicorn": "no request-header deadline; events go out through plain ASGI sends",
    "channels_redis": "the pub/sub layer runs as upstream ships it (no publish lock of its own, "
    "no forgetting of failed subscriptions, a traceback per failed read)",
    "asgiref": "a push from a database thread waits for Redis instead of handing over to the server's loop",
}

_checked: dict[str, list[str]] = {}


def missing(part: str) -> list[str]:
    """The internals of `part` that are not there (looked up now, not cached)."""
    gone = []
    for name, probe in INTERNALS[part]:
        module_name, _, path = name.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
            *parents, leaf = path.split(".")
            for attribute in parents:
                target = getattr(target, attribute)
            if probe is not None:
                target = probe()
            if not hasattr(target, leaf):
                gone.append(name)
        except (ImportError, AttributeError):
            gone.append(name)
    return gone


def check(part: str) -> bool:
    """True when every internal of `part` is there; otherwise one warning naming each missing one.

    Once per process and part: the answer does not change while it runs.
    """
    if part not in _checked:
        gone = _checked[part] = missing(part)
        if gone:
            logger.warning(
                "adapter: %s internals missing: %s; falling back: %s", part, ", ".join(gone), WITHOUT[part]
            )
    return not _checked[part]
