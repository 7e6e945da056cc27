r"""The one package that reaches into dependencies' internals; the rest of the code calls its plain functions.

Private (or undocumented) names of daphne, Twisted, autobahn, uvicorn, h11,
websockets, channels, channels_redis, redis-py and asgiref are used only here:

- `twisted_daphne`: daphne's WebSocket protocol (with ASGI's WebSocket Denial
  Response extension) and Twisted's HTTP channel, the access log's masked
  paths, the drain on SIGTERM under plain daphne;
- `daphne_launcher`: daphne's Server and command line with the drain
  (`python -m realtime.serve`);
- `uvicorn_h11`: the request-head deadline in uvicorn's h11 protocol;
- `writers`: the pre-framed writers onto daphne's and uvicorn's connections
  (`writer_for`), each with the slow-client limit;
- `pubsub_layer`: channels_redis's pub/sub layer with our fixes
  (`realtime.fanout.layer` keeps the settings path);
- here: asgiref's server loop (`server_loop`), Channels' dispatch and Origin
  rules (`handler_name`, `origin_allowed`), autobahn's Disconnected
  (`is_closed_send_error`);
- `internals`: the list of every internal used, by part, and the check.

This command shows that (app code; tests may reach further), printing only
adapter lines:

    D='daphne|twisted|autobahn|uvicorn|websockets|h11|channels|channels_redis|redis|asgiref'
    N='dataBuffer|threadlocal|real_send|validate_origin|get_handler_name|sendCloseFrame|failHandshake'
    N="$N|handle_reply|log_action|H11Protocol|WebSocketFactory|HTTPFactory|HTTPChannel"
    N="$N|serverReject|create_application"
    N="$N|RedisSingleShardConnection|RedisPubSubLoopLayer"
    git grep -nE "from ($D)[.a-z_]* import .*\b_[A-Za-z]|[]A-Za-z)]\._[A-Za-z]|\b($N)\b" \
      -- '*.py' ':!*/tests/*' ':!bench/' \
      | grep -vE "\b(self|cls|Hub)\._|\._(meta|state|base_manager|relay_\w+|observed_since|errors_\w+)\b"

(the excluded `._` names are Django's model API and this project's own
attributes on its objects).

`config.asgi` calls `install()` once per process. It first runs `check()`: each
part the process needs (daphne, uvicorn, channels_redis, asgiref) is looked up
internal by internal (`internals.INTERNALS`); where one is missing, ONE warning
names it and says what runs plain instead, and that part stays off: events go
out through plain ASGI sends (no pre-framed writer), the layer runs as
upstream ships it, a push from a database thread waits for Redis. Under daphne
(the `daphne` command, `manage.py runserver`, `realtime.serve`), when daphne,
autobahn and Twisted are the versions pinned in requirements.txt and every
internal is there, it:

- builds daphne's sockets with `RelayWebSocketProtocol`, which sends every
  close code a server may send, with its reason. daphne hands the
  application's close to autobahn's user-level `sendClose`, which accepts only
  1000 and 3000-4999 (the browser API's rule) and raises for 1009, 1011 and
  1012, leaving the socket open and silent; daphne also drops the reason
  (django/daphne#374). It also answers an Origin that autobahn cannot parse
  with 403, as the application does for one it refuses, offers ASGI's
  WebSocket Denial Response extension (daphne can only refuse a handshake
  with 403; the handshake queue answers 503 with Retry-After through it, as
  under uvicorn), and bounds what a client that stops reading can cost on
  the ASGI send path;
- drains on SIGTERM as `realtime.serve` does (`realtime.adapter.drain`): it stops
  listening, sockets mid-handshake get 1012, open ones get 1012 after
  DRAIN_GRACE_SECONDS, then the reactor stops. Plain daphne would cut every
  connection at once (1006);
- bounds the time a connection may take to send its request headers
  (HTTP_HEADER_TIMEOUT_SECONDS): Twisted's only timeout is an idle one that
  every byte restarts, so a handshake fed a byte every few seconds stayed open.

Whatever the version, under daphne it masks credentials in the access log's
request paths (`realtime.operations.redaction.redact`): daphne's command line writes that
log to stdout itself, past the logging filters.

With other versions, or an internal missing, it logs a warning and installs
nothing else: the application then runs on plain ASGI (close codes as that
daphne sends them, no drain, no header deadline, no pre-framed writers), as it
does under a uvicorn other than the pinned one (`supported`). uvicorn sends
every close code and drains with 1012 itself; under the pinned uvicorn this
package adds the same header deadline to its h11 protocol, which arms no timer
until a first request has been answered (an idle or trickling connection
stayed open for good, and uvicorn has no option for it).
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from channels.consumer import get_handler_name
from channels.security.websocket import OriginValidator

from realtime.adapter import internals

logger = logging.getLogger("realtime.adapter")

# The versions whose internals this module and realtime.adapter.wire were written
# against, by server (requirements.txt pins them).
PINNED = {
    "daphne": {"daphne": "4.2.3", "autobahn": "26.10.2", "Twisted": "26.10.0"},
    "uvicorn": {"uvicorn": "0.54.0", "websockets": "17.4"},
}

# Close codes an endpoint may send: 1004-1006 and 1015 are reserved for reporting only.
SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)})

_state: dict[str, bool] = {}


def supported(server: str) -> bool:
    """True when `server`'s packages are the pinned versions and every internal the adapter uses
    is there (checked once per process; otherwise one warning, and plain ASGI)."""
    if server not in _state:
        pinned = PINNED[server]
        found = {}
        for name in pinned:
            try:
                found[name] = version(name)
            except PackageNotFoundError:
                found[name] = None
        if found != pinned:
            logger.warning(
                "adapter: %s internals not adapted (want %s, found %s); running on plain ASGI%s",
                server,
                pinned,
                found,
                ": close codes 1009/1011/1012 may not reach clients and SIGTERM does not drain"
                if server == "daphne"
                else "",
            )
        _state[server] = found == pinned and internals.check(server)
    return _state[server]


def check() -> dict[str, bool]:
    """Check, once, every internal this process will need; each part missing one warns once, by name.

    Called by `install()` at start-up, so a missing internal shows in the
    first lines of the log rather than at the first socket.
    """
    parts = {"asgiref": internals.check("asgiref")}
    if under_daphne():
        parts["daphne"] = supported("daphne")
    if under_uvicorn():
        parts["uvicorn"] = supported("uvicorn")
    if "channels_redis.pubsub" in sys.modules:
        parts["channels_redis"] = internals.check("channels_redis")
    return parts


def under_daphne() -> bool:
    """daphne's server module is loaded: always under daphne, before the application.

    Also under uvicorn, since daphne's app config (`daphne` is an installed
    app, for runserver) imports it; what `install` sets up for daphne is then
    inert: no daphne factory builds a connection and Twisted's reactor never runs.
    """
    return "daphne.server" in sys.modules


def under_uvicorn() -> bool:
    """This process serves through uvicorn (its server module is loaded before the application;
    nothing else imports it)."""
    return "uvicorn.server" in sys.modules


def install(*, drain_on_sigterm: bool = True) -> None:
    """Adapt the server running this process (daphne or uvicorn); idempotent."""
    check()
    if under_uvicorn() and supported("uvicorn"):
        # Not exclusive of the daphne branch: Django's set-up imports daphne.server
        # (daphne is an installed app) under uvicorn too, where it is inert.
        from realtime.adapter import uvicorn_h11

        uvicorn_h11.bound_request_heads()
    if _state.get("installed") or not under_daphne():
        return
    from realtime.adapter import twisted_daphne

    twisted_daphne.redact_access_log()
    if not supported("daphne"):
        return
    _state["installed"] = True
    twisted_daphne.install_protocols()
    if drain_on_sigterm:
        twisted_daphne.drain_on_sigterm()


def handlers_installed_by_launcher() -> None:
    """realtime.serve drains itself (and stops listening first): skip the plain-daphne handlers."""
    _state["drain_handlers"] = True


def group_redis_name(layer: Any, group: str) -> str:
    """Where `layer` keeps `group` in Redis: the pub/sub channel it is published on, or the
    core layer's sorted set of members (for tests that look at Redis itself)."""
    if hasattr(layer, "group_channel"):
        return layer.group_channel(group)
    return layer._group_key(group)


def is_closed_send_error(exc: BaseException) -> bool:
    """What an ASGI send raises when the client has just gone.

    uvicorn raises ClientDisconnected (an OSError). daphne's send reaches
    autobahn, which raises Disconnected once the close handshake has begun
    (the client's close frame arrived) but before daphne has noticed that the
    connection is gone; matched by name, so nothing imports autobahn here.
    """
    if isinstance(exc, OSError):
        return True
    kind = type(exc)
    return kind.__name__ == "Disconnected" and kind.__module__ == "autobahn.exception"


def writer_for(send: Any, *, limit: int):
    """A pre-framed writer (`realtime.adapter.wire.Writer`) for the connection behind ASGI `send`, or None:
    send through ASGI then (another server, or the adapter is off for this one)."""
    from realtime.adapter.writers import writer_for

    return writer_for(send, limit=limit)


def server_loop():
    """The server's event loop when this sync code runs inside `sync_to_async` in a server, else None.

    asgiref keeps it in `SyncToAsync.threadlocal` (not public API); without it
    (`internals.check("asgiref")`), None: the caller waits for its own loop.
    """
    if not internals.check("asgiref"):
        return None
    from asgiref.sync import SyncToAsync

    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    same_process = getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) == os.getpid()
    return loop if loop is not None and same_process and loop.is_running() else None


def handler_name(message: dict[str, Any]) -> str:
    """The consumer method Channels would dispatch an ASGI `message` to (`websocket.receive` ->
    `websocket_receive`), by Channels' own rule."""
    return get_handler_name(message)


def origin_allowed(validator: OriginValidator, origin: Any) -> bool:
    """Channels' OriginValidator matching rules for a parsed `origin`, on `validator`'s allowed origins."""
    return OriginValidator.validate_origin(validator, origin)
