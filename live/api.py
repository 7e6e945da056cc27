"""JSON API of live topics: publish a value (API key), read the latest value (the topic's read rule)."""

from __future__ import annotations

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from live import selectors, services
from live.services import TopicError
from realtime.http import ApiError, api_key_api, json_body, public_api
from realtime.protocol import ErrorCode

_STATUS = {ErrorCode.UNKNOWN_TOPIC: 404, ErrorCode.TOO_LARGE: 413, ErrorCode.INVALID_MESSAGE: 400}


def _api_error(exc: TopicError) -> ApiError:
    return ApiError(_STATUS.get(exc.code, 400), str(exc.code), exc.detail)


@api_key_api("POST")
def publish(request: HttpRequest, name: str) -> JsonResponse:
    """`{"data": any}` → 202 `{"seq": int}`: the new value, sent to every subscriber now."""
    # Room for the largest value a topic may accept, and the wrapping object.
    body = json_body(request, limit=settings.LIVE_MAX_VALUE_BYTES + 1024)
    unknown = sorted(set(body) - {"data"})
    if unknown or "data" not in body:
        detail = {field: "unknown field" for field in unknown} or {"data": "required"}
        raise ApiError(400, "invalid_message", detail)
    try:
        seq = services.publish_topic(name, body["data"])
    except TopicError as exc:
        raise _api_error(exc) from None
    return JsonResponse({"seq": seq}, status=202)


@public_api("GET")
def topic(request: HttpRequest, name: str) -> HttpResponse:
    """`{"topic", "seq", "data"}`: the latest value, to whoever the topic's read rule admits."""
    rule = selectors.topic_rule(name)
    if rule is None:
        raise ApiError(404, "unknown_topic", "no such topic")
    user = request.user
    authenticated = user.is_authenticated
    group_ids = selectors.user_group_ids(user) if authenticated and rule.group_ids else frozenset()
    if not selectors.may_read(rule, authenticated=authenticated, group_ids=group_ids):
        if not authenticated:
            raise ApiError(401, "not_authenticated", "log in or send a bearer token")
        raise ApiError(403, "forbidden", "you may not read this topic")
    try:
        value = services.read_topic(name)
    except TopicError as exc:
        raise _api_error(exc) from None
    # The value is JSON text already: put it in as it is.
    body = b'{"topic":%s,"seq":%s,"data":%s}' % (
        orjson.dumps(name),
        orjson.dumps(value.seq),
        value.data.encode(),
    )
    return HttpResponse(body, content_type="application/json")
