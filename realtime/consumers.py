"""The base every socket endpoint derives from.

It owns what is the same on every endpoint: accepting the socket, the
credential deadline, token authentication and expiry (`auth` frames, in-band
refresh), forced disconnects (`Event.DISCONNECT` to the user's group, which
every authenticated socket joins), the frame size limit, decoding and validating frames
against `protocol`, `ping`, turning failures into `error` frames, and group
membership. How group events reach it, one handler at a time, is
realtime.delivery's; endpoints whose items have ordered ids build on
realtime.streams. Subclasses supply `frames`, one `frame_<type>` method per
client frame type, `authenticated()` and a `push_*` handler per event type
(see realtime.delivery for what one may do).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Mapping
from typing import Any, ClassVar

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from realtime import adapter, db
from realtime.adapter import drain
from realtime.authentication import socket_cap
from realtime.authentication.tokens import TOKEN_EXPIRED, InvalidToken, VerifiedToken, verify_token
from realtime.delivery import EventDelivery
from realtime.fanout.hub import get_hub
from realtime.operations import observe
from realtime.operations.errors import UNAVAILABLE_ERRORS, log_unavailable
from realtime.protocol import (
    Auth,
    ClientFrame,
    CloseCode,
    CloseReason,
    ErrorCode,
    FrameError,
    Ping,
    ServerFrame,
    encode,
    error_frame,
    parse_frame,
    user_group,
)

logger = logging.getLogger("realtime.socket")

# A token sent in an `auth` frame: the frames lane (realtime.db).
verify = db.frames(verify_token)


class CloseSocket(Exception):
    """Raised inside a handler to close the socket with `code`."""

    def __init__(self, code: CloseCode, reason: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class RealtimeConsumer(EventDelivery, AsyncWebsocketConsumer):
    """Base socket consumer; group events reach it as realtime.delivery says."""

    frames: ClassVar[Mapping[str, type[ClientFrame]]] = {}
    endpoint: ClassVar[str] = "socket"
    # Sockets without credentials are served (`anonymous()`) instead of closed at the deadline.
    allows_anonymous: ClassVar[bool] = False
    # Class defaults, so `disconnect()` can run whatever point the socket reached.
    user = None
    closed = False
    _auth_timer: asyncio.Task | None = None
    _expiry_timer: asyncio.Task | None = None
    _gone = False  # disconnect() has run
    _has_slot = False  # counted in the user's sockets (realtime.authentication.socket_cap)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hub_groups: list[str] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Fail at import, not at the first frame, if a frame type has no handler.
        for kind in cls.frames:
            if kind not in ("auth", "ping") and not hasattr(cls, f"frame_{kind}"):
                raise TypeError(f"{cls.__name__} has no handler frame_{kind}")

    # --- lifecycle --------------------------------------------------------------
    async def __call__(self, scope, receive, send) -> None:
        """Channels' consumer loop, minus the per-socket channel-layer channel.

        Group events reach a socket through its worker's hub, and forced
        disconnects through the user's group, so a channel of its own would
        only cost every idle socket a Redis subscription, a queue and a
        waiting task. Incoming frames are read and dispatched one at a time,
        as Channels does, without a task per frame.
        """
        self.scope = scope
        self.channel_layer = None
        # Names this socket in presence entries and in the `origin` of its own
        # typing and presence news; unique across workers.
        self.socket_id = f"socket.{uuid.uuid4().hex}"
        self._server_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            # The loop also ends when the server cancels the application or an
            # error escapes a handler; the socket is gone either way.
            await self.disconnect(1006)

    async def base_send(self, message: dict[str, Any]) -> None:
        """Channels' path to the server for every ASGI message this consumer sends.

        A client can go away at any moment, even between the 101 and the first
        frame. ASGI then lets the server raise from send (uvicorn raises
        ClientDisconnected; daphne, between the client's close frame and the
        lost connection, autobahn's Disconnected: `adapter.is_closed_send_error`). Raised
        here, it would abort the handler that was sending, skip the cleanup in
        `disconnect()` and log a traceback. The server's `websocket.disconnect`
        is on its way to `receive` whatever the server, so: note that the
        socket is closed, and let that message run `disconnect()`.
        """
        try:
            await self._server_send(message)
        except Exception as exc:
            if not adapter.is_closed_send_error(exc):
                raise
            self.closed = True

    async def connect(self) -> None:
        self.auth_method: str | None = None
        # Epoch seconds when a token socket's token runs out; None for a session socket.
        self.token_expires_at: int | None = None
        await self.accept()
        if self.closed:
            return  # the client left during the handshake; its disconnect follows
        self._write = adapter.writer_for(self._server_send, limit=settings.WS_MAX_BUFFER_BYTES)
        observe.socket_accepted(self)  # metrics
        if not drain.register(self):  # this worker is shutting down: reconnect elsewhere
            await self.close_with(CloseCode.RESTARTING, "server_restarting")
            return
        elif self.scope.get("unavailable"):
            # The handshake could not look the caller up (realtime.authentication.middleware): retry later.
            await self.close_with(CloseCode.SERVER_ERROR, "unavailable")
            return
        elif self.scope.get("auth_error"):
            # A bearer header was sent and refused: say so now rather than at the deadline.
            await self.close_with(CloseCode.NOT_AUTHENTICATED, self.scope["auth_error"])
            return
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            self.auth_method = self.scope.get("auth_method")
            if self.auth_method == "token":
                self.token_expires_at = self.scope.get("token_expires_at")
            await self._run(self._start, user)
        elif self.allows_anonymous:
            await self._run(self.anonymous)
        else:
            self._auth_timer = asyncio.ensure_future(self._auth_deadline())

    async def disconnect(self, code: int) -> None:
        """Undo everything the socket set up: exactly once, whatever the server and the moment."""
        if self._gone:
            return
        self._gone = True
        self.closed = True
        drain.unregister(self)
        observe.socket_closed(self, code)  # metrics and the close log line
        for timer in (self._auth_timer, self._expiry_timer):
            if timer is not None:
                timer.cancel()
        # What is left waits on Redis. The server may cancel this consumer in the
        # meantime (daphne kills an application that outlives its close timeout,
        # as thousands of sockets closing at once can): that must not leave the
        # socket in its groups or its user online, so the release runs on.
        release = asyncio.ensure_future(self._release())
        _releasing.add(release)
        release.add_done_callback(_releasing.discard)
        await asyncio.shield(release)

    async def _release(self) -> None:
        if self._has_slot:
            self._has_slot = False
            socket_cap.get_slots().release(socket=self.socket_id)
        if self.user is not None or self.allows_anonymous:
            await self.left()
        hub = get_hub()
        for group in self._hub_groups:
            await hub.unsubscribe(group, self)

    async def _auth_deadline(self) -> None:
        await asyncio.sleep(settings.WS_AUTH_TIMEOUT_SECONDS)
        if self.user is None and not self.closed:
            await self.close_with(CloseCode.NOT_AUTHENTICATED, CloseReason.NOT_AUTHENTICATED)

    async def _start(self, user) -> None:
        self.user = user
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        if self.token_expires_at is not None:
            self._schedule_expiry()
        observe.socket_authenticated(self)  # the open log line
        try:
            # Every endpoint's sockets are in the user's group, so a forced
            # disconnect reaches them all, whatever else the subclass joins.
            # The slot is taken meanwhile: one Redis call, no extra wait on the join path.
            outcomes = await asyncio.gather(
                self._take_slot(user), self.join(user_group(user.pk)), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            if not outcomes[0]:
                raise CloseSocket(CloseCode.RATE_LIMITED, CloseReason.TOO_MANY_SOCKETS)
            await self.authenticated()
        except UNAVAILABLE_ERRORS as exc:
            # Without its groups or its welcome the socket would sit silent;
            # closing makes the client retry (and resume) once we are back.
            log_unavailable(logger, exc, "backing service unavailable at start endpoint=%s", self.endpoint)
            raise CloseSocket(CloseCode.SERVER_ERROR, "unavailable") from None

    async def _take_slot(self, user) -> bool:
        taken = await socket_cap.get_slots().take(user_id=user.pk, socket=self.socket_id)
        if taken and self._gone:
            socket_cap.get_slots().release(socket=self.socket_id)  # closed while it was being taken
        self._has_slot = taken and not self._gone
        return taken

    def _schedule_expiry(self) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        self._expiry_timer = asyncio.ensure_future(self._expire_at(self.token_expires_at))

    async def _expire_at(self, expires_at: int) -> None:
        # Wall clock, not the loop's: `exp` is wall-clock time.
        await asyncio.sleep(max(0.0, expires_at - time.time()))
        if not self.closed and self.token_expires_at == expires_at:
            logger.info("socket token expired endpoint=%s user=%s", self.endpoint, self.user.pk)
            await self.close_with(CloseCode.NOT_AUTHENTICATED, CloseReason.TOKEN_EXPIRED)

    # --- hooks for subclasses ------------------------------------------------------
    async def authenticated(self) -> None:
        """Authorize, join groups and send `welcome`. May raise CloseSocket."""
        raise NotImplementedError

    async def anonymous(self) -> None:
        """On endpoints that allow anonymous sockets: set up one accepted without credentials.

        May raise CloseSocket. A later `auth` frame makes it authenticated (`authenticated()`).
        """

    async def left(self) -> None:
        """Called once when an authenticated socket goes away (any socket on `allows_anonymous` endpoints)."""

    async def authenticate_token(self, frame: Auth) -> VerifiedToken:
        """The user (and expiry) of an `auth` frame's token, or FrameError not_authenticated."""
        try:
            return await verify(frame.token)
        except InvalidToken as exc:
            detail = "token expired" if exc.reason == TOKEN_EXPIRED else "invalid token"
            raise FrameError(ErrorCode.NOT_AUTHENTICATED, detail) from None

    # --- frames in ---------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        limit = settings.WS_MAX_FRAME_BYTES
        if text_data is None:
            if len(bytes_data or b"") > limit:
                await self.close_with(CloseCode.TOO_LARGE, "frame_too_large")
                return
            await self.send_error(ErrorCode.INVALID_MESSAGE, "binary frames are not accepted; send JSON text")
            return
        # A character is at most 4 bytes in UTF-8: encode only when it could matter.
        if len(text_data) * 4 > limit and len(text_data.encode("utf-8", "surrogatepass")) > limit:
            await self.close_with(CloseCode.TOO_LARGE, "frame_too_large")
            return
        try:
            frame = parse_frame(text_data, self.frames)
        except FrameError as exc:
            await self.send_error(exc.code, exc.detail, exc.ref)
            return
        await self._run(self._handle, frame, ref=frame.ref)

    async def _handle(self, frame: ClientFrame) -> None:
        observe.frame_in(self, frame.type)  # metrics
        if isinstance(frame, Ping):
            await self.send_frame({"type": ServerFrame.PONG})
        elif isinstance(frame, Auth):
            verified = await self.authenticate_token(frame)
            if self.user is None:
                self.auth_method = "token"
                self.token_expires_at = verified.expires_at
                await self._start(verified.user)
            elif verified.user.pk != self.user.pk:
                raise FrameError(ErrorCode.FORBIDDEN, "token is for a different user")
            elif self.token_expires_at is not None and verified.expires_at > self.token_expires_at:
                # In-band refresh: the socket now lives until the newer token expires.
                # (A session socket has no expiry to extend.) Success is silent.
                self.token_expires_at = verified.expires_at
                self._schedule_expiry()
        elif self.user is None and not self.allows_anonymous:
            raise FrameError(ErrorCode.NOT_AUTHENTICATED, "authenticate first")
        else:
            await getattr(self, f"frame_{frame.type}")(frame)

    async def _run(self, handler, *args: Any, ref: str | None = None) -> None:
        """Run a handler; turn whatever it raises into an error frame or a close."""
        try:
            await handler(*args)
        except FrameError as exc:
            await self.send_error(exc.code, exc.detail, exc.ref or ref)
        except CloseSocket as exc:
            await self.close_with(exc.code, exc.reason)
        except UNAVAILABLE_ERRORS as exc:
            log_unavailable(logger, exc, "backing service unavailable endpoint=%s", self.endpoint)
            await self.send_error(ErrorCode.UNAVAILABLE, "service temporarily unavailable, retry", ref)
        except Exception:
            logger.exception("unexpected error endpoint=%s", self.endpoint)
            await self.send_error(ErrorCode.SERVER_ERROR, "unexpected server error", ref)

    # --- frames out ----------------------------------------------------------------
    async def send_frame(self, frame: Mapping[str, Any]) -> None:
        if not self.closed:
            observe.frame_out(self, frame)  # metrics
            await self.send(text_data=encode(frame))

    async def send_encoded(self, text: str) -> None:
        """Send a frame that was encoded once for many sockets."""
        if not self.closed:
            observe.frame_out(self, text)  # metrics
            await self.send(text_data=text)

    async def send_error(self, code: ErrorCode, detail: str, ref: str | None = None) -> None:
        observe.error(self, code)  # metrics and the error log line
        await self.send_frame(error_frame(code, detail, ref))

    async def close_with(self, code: CloseCode, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            # A plain str, as ASGI says: reasons are often CloseReason members,
            # and autobahn (realtime.serve) refuses any str subclass.
            await self.close(code=int(code), reason=str(reason) or None)

    # --- channel-layer events every endpoint handles ---------------------------------
    def push_disconnect(self, event: dict[str, Any]) -> Awaitable[None]:
        reason = event.get("reason")
        if reason not in set(CloseReason):
            reason = CloseReason.LOGGED_OUT
        user_id = getattr(self.user, "pk", None)
        logger.info("socket disconnected endpoint=%s user=%s reason=%s", self.endpoint, user_id, reason)
        return self.close_with(CloseCode.NOT_AUTHENTICATED, reason)

    # --- groups ----------------------------------------------------------------------
    async def join(self, group: str) -> None:
        """Receive the group's events (through this worker's hub)."""
        if group in self._hub_groups:
            return
        # Listed before the join is awaited: a socket cancelled or failing meanwhile (its client
        # left mid-handshake) is a member of the hub already, and `disconnect()` takes it out.
        self._hub_groups.append(group)
        await get_hub().subscribe(group, self)


# Releases under way, kept referenced until done (see `disconnect`).
_releasing: set[asyncio.Future] = set()
