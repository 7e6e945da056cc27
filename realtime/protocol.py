"""The wire protocol in one place: frame schemas, error codes, close codes,
channel-layer event types and group names (see docs/protocol.md).

Consumers validate every incoming frame here before acting on it. The
client's `type` is only ever used as a key into the tables below; it is never
forwarded to the channel layer, where Channels would map it to a method name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

MAX_ID = 2**63 - 1  # PostgreSQL bigint; larger ids would fail in the query, not here
MAX_REF_LENGTH = 128
MAX_TOKEN_LENGTH = 8192
MAX_CLIENT_ID_LENGTH = 64


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNKNOWN_TYPE = "unknown_type"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    FORBIDDEN = "forbidden"
    NOT_AUTHENTICATED = "not_authenticated"
    UNKNOWN_TOPIC = "unknown_topic"  # v2: /ws/live/ and the topic API; the error frame names the topic
    UNAVAILABLE = "unavailable"
    SERVER_ERROR = "server_error"


class CloseCode(IntEnum):
    TOO_LARGE = 1009
    SERVER_ERROR = 1011
    RESTARTING = 1012
    OVERLOADED = 1013  # "try again later": a handshake refused by realtime.handshake_queue
    NOT_AUTHENTICATED = 4401
    FORBIDDEN = 4403
    NOT_FOUND = 4404
    RATE_LIMITED = 4429


class Event(StrEnum):
    """Channel-layer event types. Channels dispatches "push.x" to `push_x`."""

    NOTIFICATION = "push.notification"
    READ = "push.read"
    MESSAGE = "push.message"
    MESSAGE_DELETED = "push.message_deleted"
    TYPING = "push.typing"
    # A worker's batched presence frame for its local sockets of a room (never
    # sent through the channel layer), and the changes it is made from, which
    # each worker takes once (chat.presence).
    PRESENCE = "push.presence"
    PRESENCE_CHANGES = "presence.changes"
    DISCONNECT = "push.disconnect"
    # Users lost access to a private room: its sockets of theirs close with 4403
    # (chat.services.revoke_access).
    REVOKE = "push.revoke"
    # A new value of a live topic, to the topic's group (live.services.publish_topic).
    TOPIC = "push.topic"
    # Topic declarations changed (saved or deleted), to the broadcast group: each
    # worker takes it once (live.fanout) and hands each live socket of its that
    # holds a topic they cover a TOPIC_RECHECK of its own (never sent through
    # the channel layer), which ends the subscriptions no longer allowed.
    TOPIC_RULES = "topic.rules"
    TOPIC_RECHECK = "push.topic_recheck"


class ServerFrame(StrEnum):
    """The `type` of every frame the server sends (docs/protocol.md)."""

    WELCOME = "welcome"
    REPLAY_DONE = "replay_done"
    NOTIFICATION = "notification"
    READ = "read"
    MESSAGE = "message"
    MESSAGE_DELETED = "message_deleted"
    TYPING = "typing"
    PRESENCE = "presence"
    PONG = "pong"
    ERROR = "error"
    # /ws/live/ (live topics)
    SUBSCRIBED = "subscribed"
    UPDATE = "update"
    UNSUBSCRIBED = "unsubscribed"


class LayerMessage(StrEnum):
    """The channel-layer messages between workers that carry events (realtime.fanout)."""

    HUB_EVENT = "hub.event"  # one event for one group's sockets on every worker
    HUB_BATCH = "hub.batch"  # one event for many groups (realtime.fanout.events.batch_envelope)
    ECHO = "layer.echo"  # the live-feed check's round trip (realtime.fanout.echo)


# The key realtime.fanout.push stamps on an event at commit (for the delivery-lag metric).
COMMITTED_AT = "committed_at"


class CloseReason(StrEnum):
    """Reasons sent with a close, so a client knows whether to re-authenticate or back off."""

    NOT_AUTHENTICATED = "not_authenticated"  # no valid credentials by the deadline
    INVALID_TOKEN = "invalid_token"  # noqa: S105 - the handshake's bearer token was refused
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 - the socket's token ran out, not refreshed
    LOGGED_OUT = "logged_out"
    DEACTIVATED = "deactivated"  # an admin deactivated (or deleted) the user
    DISCONNECTED = "disconnected"  # an admin's "Disconnect user"
    TOO_MANY_SOCKETS = "too_many_sockets"  # with 4429: the user holds WS_MAX_SOCKETS_PER_USER already
    # With 1013, and the `error` of a 503 handshake answer: WS_HANDSHAKE_QUEUE_LIMIT handshakes in progress.
    OVERLOADED = "overloaded"


def user_group(user_id: int) -> str:
    """Every socket of one user, whatever the endpoint."""
    return f"user.{user_id}"


def broadcast_group() -> str:
    """Every worker's hub: batches of events for many groups at once (see realtime.fanout.hub)."""
    return "broadcast"


def room_group(room_id: int) -> str:
    # By id, not slug: group names are limited to 100 ASCII characters.
    return f"room.{room_id}"


# Live topic names (contract v2); a group name must stay under 100 characters.
TOPIC_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_TOPIC_GROUP_NAME_MAX = 90


def topic_group(name: str) -> str:
    """Every worker with a socket subscribed to the live topic `name`."""
    if len(name) <= _TOPIC_GROUP_NAME_MAX:
        return f"topic.{name}"
    # Long names would exceed Channels' limit on group names: a digest instead.
    return "topic-h." + hashlib.sha256(name.encode()).hexdigest()[:40]


class FrameError(Exception):
    """A client frame that cannot be acted on; becomes an `error` frame."""

    def __init__(self, code: ErrorCode, detail: str, *, ref: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.ref = ref


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it here rather than at INSERT.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


class ClientFrame(BaseModel):
    # strict: "1" is not an int and true is not 1; extra fields are ignored
    # so that clients can add fields (such as "ref") without breaking.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    # Echoed in an error caused by this frame; must be a short string.
    ref: Annotated[str, Field(max_length=MAX_REF_LENGTH)] | None = None


class Ping(ClientFrame):
    type: Literal["ping"]


class Auth(ClientFrame):
    type: Literal["auth"]
    token: Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_LENGTH)]


class Resume(ClientFrame):
    type: Literal["resume"]
    after: Annotated[int, Field(ge=0, le=MAX_ID)]


class MarkRead(ClientFrame):
    type: Literal["mark_read"]
    ids: Annotated[list[Id], Field(min_length=1)]


class MarkAllRead(ClientFrame):
    type: Literal["mark_all_read"]


class ChatPost(ClientFrame):
    type: Literal["message"]
    body: Text
    client_id: Annotated[Text, Field(min_length=1, max_length=MAX_CLIENT_ID_LENGTH)]


class Typing(ClientFrame):
    type: Literal["typing"]


NOTIFICATION_FRAMES: Mapping[str, type[ClientFrame]] = {
    "auth": Auth,
    "ping": Ping,
    "resume": Resume,
    "mark_read": MarkRead,
    "mark_all_read": MarkAllRead,
}

CHAT_FRAMES: Mapping[str, type[ClientFrame]] = {
    "auth": Auth,
    "ping": Ping,
    "resume": Resume,
    "message": ChatPost,
    "typing": Typing,
}


# --- /ws/live/ ---------------------------------------------------------------------------
LIVE_NAMES_PER_FRAME = 100  # names in one subscribe or unsubscribe frame (contract v2)
LIVE_PUBLISH_MAX_BYTES = 16 * 1024  # a client's `publish` data, as JSON (contract v2)
# A string longer than any topic name is a malformed frame, not an unknown topic.
TopicName = Annotated[Text, Field(min_length=1, max_length=100)]


class Subscribe(ClientFrame):
    type: Literal["subscribe"]
    topics: Annotated[list[TopicName], Field(min_length=1)]


class Unsubscribe(ClientFrame):
    type: Literal["unsubscribe"]
    topics: Annotated[list[TopicName], Field(min_length=1)]


class Publish(ClientFrame):
    type: Literal["publish"]
    topic: TopicName
    data: Any


LIVE_FRAMES: Mapping[str, type[ClientFrame]] = {
    "auth": Auth,
    "ping": Ping,
    "subscribe": Subscribe,
    "unsubscribe": Unsubscribe,
    "publish": Publish,
}


def parse_frame(text: str, frames: Mapping[str, type[ClientFrame]]) -> ClientFrame:
    """Decode and validate one text frame, or raise FrameError."""
    if not text:
        raise FrameError(ErrorCode.INVALID_JSON, "empty frame")
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FrameError(ErrorCode.INVALID_JSON, "frame is not valid JSON") from None
    if not isinstance(raw, dict):
        raise FrameError(ErrorCode.INVALID_MESSAGE, "frame must be a JSON object")
    ref = raw.get("ref")
    if not isinstance(ref, str) or len(ref) > MAX_REF_LENGTH:
        ref = None
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise FrameError(ErrorCode.INVALID_MESSAGE, "field 'type' must be a string", ref=ref)
    model = frames.get(kind)
    if model is None:
        raise FrameError(ErrorCode.UNKNOWN_TYPE, "unknown frame type", ref=ref)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise FrameError(ErrorCode.INVALID_MESSAGE, _describe(exc), ref=ref) from None


def _describe(exc: ValidationError) -> str:
    # Name the field and the rule, never echo the input back.
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "frame"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def error_frame(
    code: ErrorCode, detail: str, ref: str | None = None, *, topic: str | None = None
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": ServerFrame.ERROR, "code": str(code), "detail": detail}
    if topic is not None:
        frame["topic"] = topic  # /ws/live/: the topic refused, the frame's others went ahead
    if ref is not None:
        frame["ref"] = ref
    return frame


def encode(frame: Mapping[str, Any]) -> str:
    return orjson.dumps(frame).decode()


def iso(moment: datetime) -> str:
    """Times on the wire: ISO 8601, UTC, with a Z."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
