"""JSON API of the inbox and the publish endpoint (see docs/protocol.md, "HTTP API")."""

from __future__ import annotations

from typing import Annotated, Any

from django.http import HttpRequest, JsonResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from notifications import selectors, services
from notifications.models import Level
from notifications.serializers import notification_dict
from realtime.http import ApiError, api, api_key_api, int_param, json_body, page_limit


@api("GET")
def inbox(request: HttpRequest) -> JsonResponse:
    rows, next_before = selectors.inbox_page(
        user=request.user,
        limit=page_limit(request),
        before=int_param(request, "before"),
        unread_only=request.GET.get("unread") in ("1", "true"),
    )
    return JsonResponse({"results": [notification_dict(r) for r in rows], "next_before": next_before})


@api("GET")
def unread_count(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"unread": selectors.unread_count(user=request.user)})


@api("POST")
def mark_read(request: HttpRequest) -> JsonResponse:
    body = json_body(request)
    if body.get("all") is True:
        unread = services.mark_all_read(user=request.user)
    else:
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids or not all(_is_id(i) for i in ids):
            raise ApiError(400, "invalid_message", {"ids": "a non-empty list of ids, or all: true"})
        unread = services.mark_read(user=request.user, ids=ids)
    return JsonResponse({"unread": unread})


def _is_id(value: object) -> bool:
    return type(value) is int and 1 <= value <= 2**63 - 1


Name = Annotated[str, Field(min_length=1, max_length=150)]


class PublishNotification(BaseModel):
    """The body of `POST /api/publish/notifications/`.

    Strict types, and unknown fields are refused: a typo such as `"user"` or
    `"everyone"` must not silently send to fewer people than meant.
    """

    model_config = ConfigDict(strict=True, extra="forbid")

    users: Annotated[list[Name], Field(max_length=1000)] = []
    groups: Annotated[list[Name], Field(max_length=100)] = []
    all: bool = False
    title: str
    body: str = ""
    level: str = Level.INFO.value
    url: str | None = None
    data: dict[str, Any] | None = None


def _field_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, list[str]] = {}
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else "body"
        errors.setdefault(field, []).append(error["msg"])
    return {field: "; ".join(messages) for field, messages in errors.items()}


@api_key_api("POST")
def publish_notification(request: HttpRequest) -> JsonResponse:
    try:
        body = PublishNotification.model_validate(json_body(request))
    except ValidationError as exc:
        raise ApiError(400, "invalid_message", _field_errors(exc)) from None
    if not (body.users or body.groups or body.all):
        raise ApiError(400, "invalid_message", {"users": "name users or groups, or set all: true"})
    content = services.content_of({**body.model_dump(), "url": body.url or ""})
    sent = services.notify_named(usernames=body.users, group_names=body.groups, everyone=body.all, **content)
    return JsonResponse({"recipients": len(sent)}, status=202)
