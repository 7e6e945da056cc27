"""JSON API of the inbox (see ../shared/CONTRACT.md, HTTP API)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from notifications import selectors, services
from notifications.serializers import notification_dict
from realtime.http import ApiError, api, int_param, json_body, page_limit


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
