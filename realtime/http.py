"""Small helpers for the JSON HTTP API: errors, body parsing, authentication.

Every API error is `{"error": code, "detail": str}` with a fitting status;
no HTML error page and no traceback ever reaches an API client.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse

from realtime.errors import UNAVAILABLE_ERRORS

logger = logging.getLogger("realtime.http")


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str | dict[str, Any]) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.detail = detail


def error_response(status: int, code: str, detail: str | dict[str, Any]) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


def validation_detail(exc: ValidationError) -> dict[str, str] | str:
    if hasattr(exc, "error_dict"):
        return {field: "; ".join(messages) for field, messages in exc.message_dict.items()}
    return "; ".join(exc.messages)


def json_body(request: HttpRequest, *, allow_empty: bool = False) -> dict[str, Any]:
    if len(request.body) > settings.WS_MAX_FRAME_BYTES:
        raise ApiError(413, "too_large", f"body over {settings.WS_MAX_FRAME_BYTES} bytes")
    if not request.body:
        if allow_empty:
            return {}
        raise ApiError(400, "invalid_json", "empty body")
    try:
        data = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_message", "body must be a JSON object")
    return data


def int_param(request: HttpRequest, name: str, *, default: int | None = None, minimum: int = 1) -> int | None:
    raw = request.GET.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_message", {name: "must be an integer"}) from None
    if value < minimum or value > 2**63 - 1:
        raise ApiError(400, "invalid_message", {name: f"must be at least {minimum}"})
    return value


def page_limit(request: HttpRequest) -> int:
    limit = int_param(request, "limit", default=settings.API_PAGE_DEFAULT)
    return min(limit, settings.API_PAGE_MAX)


def api(*methods: str) -> Callable:
    """Decorate a JSON view: allowed methods, a logged-in user, uniform errors."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return error_response(405, "method_not_allowed", f"use {', '.join(methods)}")
            if not request.user.is_authenticated:
                return error_response(401, "not_authenticated", "log in or send a bearer token")
            try:
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return error_response(exc.status, exc.code, exc.detail)
            except ValidationError as exc:
                return error_response(400, "invalid_message", validation_detail(exc))
            except UNAVAILABLE_ERRORS:
                logger.warning("backing service unavailable path=%s", request.path, exc_info=True)
                return error_response(503, "unavailable", "service temporarily unavailable, retry")

        return wrapper

    return decorate


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF failures as JSON on the API, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return error_response(403, "forbidden", "CSRF check failed: send the X-CSRFToken header")
    from django.views.csrf import csrf_failure as default

    return default(request, reason)
