"""The base every socket endpoint derives from.

It owns what is the same on every endpoint: accepting the socket, the
credential deadline, the frame size limit, decoding and validating frames
against `protocol`, `ping`, turning failures into `error` frames, and group
membership. Subclasses supply `frames`, one `frame_<type>` method per client
frame type, `authenticated()` and the `push_*` handlers for their events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from realtime import drain, observe
from realtime.errors import UNAVAILABLE_ERRORS
from realtime.protocol import (
    Auth,
    ClientFrame,
    CloseCode,
    ErrorCode,
    FrameError,
    Ping,
    encode,
    error_frame,
    parse_frame,
)

logger = logging.getLogger("realtime.socket")


class CloseSocket(Exception):
    """Raised inside a handler to close the socket with `code`."""

    def __init__(self, code: CloseCode, reason: str = "") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class RealtimeConsumer(AsyncWebsocketConsumer):
    frames: ClassVar[Mapping[str, type[ClientFrame]]] = {}
    endpoint: ClassVar[str] = "socket"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Fail at import, not at the first frame, if a frame type has no handler.
        for kind in cls.frames:
            if kind not in ("auth", "ping") and not hasattr(cls, f"frame_{kind}"):
                raise TypeError(f"{cls.__name__} has no handler frame_{kind}")

    # --- lifecycle --------------------------------------------------------------
    async def connect(self) -> None:
        self.user = None
        self.closed = False
        self._auth_timer: asyncio.Task | None = None
        await self.accept()
        observe.socket_accepted(self)  # metrics
        if not drain.register(self):  # this worker is shutting down: reconnect elsewhere
            await self.close_with(CloseCode.RESTARTING, "server_restarting")
            return
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            await self._run(self._start, user)
        else:
            self._auth_timer = asyncio.ensure_future(self._auth_deadline())

    async def disconnect(self, code: int) -> None:
        self.closed = True
        drain.unregister(self)
        observe.socket_closed(self, code)  # metrics and the close log line
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        if self.user is not None:
            await self.left()

    async def _auth_deadline(self) -> None:
        await asyncio.sleep(settings.WS_AUTH_TIMEOUT_SECONDS)
        if self.user is None and not self.closed:
            await self.close_with(CloseCode.NOT_AUTHENTICATED, "not_authenticated")

    async def _start(self, user) -> None:
        self.user = user
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        observe.socket_authenticated(self)  # the open log line
        await self.authenticated()

    # --- hooks for subclasses ------------------------------------------------------
    async def authenticated(self) -> None:
        """Authorize, join groups and send `welcome`. May raise CloseSocket."""
        raise NotImplementedError

    async def left(self) -> None:
        """Called once when an authenticated socket goes away."""

    async def authenticate_token(self, frame: Auth):
        """Return the user for an `auth` frame's token (token support plugs in here)."""
        raise FrameError(ErrorCode.NOT_AUTHENTICATED, "token authentication is not enabled")

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
            await self.send_frame({"type": "pong"})
        elif isinstance(frame, Auth):
            user = await self.authenticate_token(frame)
            if self.user is None:
                await self._start(user)
            elif user.pk != self.user.pk:
                raise FrameError(ErrorCode.FORBIDDEN, "token is for a different user")
        elif self.user is None:
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
        except UNAVAILABLE_ERRORS:
            logger.warning("backing service unavailable endpoint=%s", self.endpoint, exc_info=True)
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
            await self.close(code=int(code), reason=reason or None)

    async def dispatch(self, message: dict[str, Any]) -> None:
        await super().dispatch(message)
        observe.event_handled(self, message)  # push latency, commit to socket

    # --- groups ---------------------------------------------------------------------
    async def join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups.append(group)
