"""JSON API of chat rooms (see ../shared/CONTRACT.md, HTTP API)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from chat import selectors
from chat.serializers import message_dict, room_dict
from realtime.http import ApiError, api, int_param, page_limit


@api("GET")
def rooms(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"results": [room_dict(r) for r in selectors.visible_rooms(user=request.user)]})


@api("GET")
def messages(request: HttpRequest, slug: str) -> JsonResponse:
    room = selectors.room_by_slug(slug=slug)
    # A private room the user is not in answers exactly like a missing one,
    # so the API does not reveal which private rooms exist.
    if room is None or not selectors.can_join(room=room, user=request.user):
        raise ApiError(404, "not_found", "no such room")
    rows, next_before = selectors.history_page(
        room=room, limit=page_limit(request), before=int_param(request, "before")
    )
    return JsonResponse(
        {"results": [message_dict(m, room_slug=room.slug) for m in rows], "next_before": next_before}
    )
