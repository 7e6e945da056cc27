"""JSON API of chat rooms (see docs/protocol.md, "HTTP API")."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest, JsonResponse

from chat import presence, selectors, services
from chat.models import Room
from chat.serializers import message_dict, room_dict
from realtime.http import ApiError, api, api_key_api, int_param, json_body, page_limit
from realtime.protocol import room_group

# Usernames are at most 150 characters (Django's user model).
_MAX_USERNAME = 150


@api("GET")
def rooms(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"results": [room_dict(r) for r in selectors.visible_rooms(user=request.user)]})


def _joinable_room(request: HttpRequest, slug: str) -> Room:
    room = selectors.room_by_slug(slug=slug)
    if room is None:
        raise ApiError(404, "not_found", "no such room")
    # Asked on every request, so a member removed a moment ago is refused at once.
    # 403 as the socket's 4403: a 404 here would hide nothing the socket does not tell.
    if not selectors.room_access(room_id=room.pk, user=request.user).allowed:
        raise ApiError(403, "forbidden", "you are not a member of this room")
    return room


@api("GET")
def messages(request: HttpRequest, slug: str) -> JsonResponse:
    room = _joinable_room(request, slug)
    rows, next_before = selectors.history_page(
        room=room, limit=page_limit(request), before=int_param(request, "before")
    )
    return JsonResponse(
        {"results": [message_dict(m, room_slug=room.slug) for m in rows], "next_before": next_before}
    )


@api("GET")
def online(request: HttpRequest, slug: str) -> JsonResponse:
    """Who is online in the room, sorted by username, a page at a time (`after` the last one seen)."""
    room = _joinable_room(request, slug)
    after = request.GET.get("after") or None
    if after is not None and (len(after) > _MAX_USERNAME or "\x00" in after):
        raise ApiError(400, "invalid_message", {"after": "must be a username"})
    limit = min(int_param(request, "limit", default=settings.PRESENCE_LIST_MAX), presence.PAGE_MAX)
    page = presence.online_page(room_group(room.pk), after=after, limit=limit)
    return JsonResponse({"results": page.results, "next_after": page.next_after, "online_count": page.count})


@api_key_api("POST")
def publish_message(request: HttpRequest, slug: str) -> JsonResponse:
    """A system message (no author) from another backend, through the same service."""
    body = json_body(request)
    unknown = sorted(set(body) - {"body"})
    if unknown:
        raise ApiError(400, "invalid_message", {name: "unknown field" for name in unknown})
    if not isinstance(body.get("body"), str):
        raise ApiError(400, "invalid_message", {"body": "a string is required"})
    room = selectors.room_by_slug(slug=slug)
    if room is None:
        raise ApiError(404, "not_found", "no such room")
    try:
        message, _ = services.post_message(room=room, author=None, body=body["body"])
    except ValidationError as exc:
        status, code = (413, "too_large") if services.is_too_long(exc) else (400, "invalid_message")
        raise ApiError(status, code, {"body": "; ".join(exc.messages)}) from None
    return JsonResponse({"message": message_dict(message, room_slug=room.slug)}, status=201)
