"""Small helpers for the JSON HTTP API: errors, body parsing, authentication.

Every API error is `{"error": code, "detail": str}` with a fitting status;
no HTML error page and no traceback ever reaches an API client.

Authentication of a JSON view (`api`):
- `Authorization: Bearer <jwt>` authenticates alone, without the session, and
  is exempt from CSRF: a browser never attaches it by itself, so a forged
  cross-site request cannot carry it. A bad bearer token is a 401, never a
  fallback to the cookie.
- Otherwise the session, and then an unsafe method needs the CSRF token as
  for any Django view (the check runs here, since the view is csrf_exempt
  to let bearer requests through).
- Other schemes (Basic from a password-protected proxy) are not ours: ignored.

`api_key_api` views (`/api/publish/*`) take only `Authorization: Api-Key`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import orjson
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt

from realtime.authentication.apikeys import authenticate_api_key
from realtime.authentication.tokens import TOKEN_EXPIRED, InvalidToken, verify_token
from realtime.operations.errors import UNAVAILABLE_ERRORS, log_unavailable

logger = logging.getLogger("realtime.http")


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str | dict[str, Any]) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.detail = detail


def error_response(status: int, code: str, detail: str | dict[str, Any]) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


def rate_limited(retry_after: int) -> JsonResponse:
    """429 `rate_limited`, with the seconds to wait in `Retry-After` (RFC 9110 10.2.3)."""
    response = error_response(429, "rate_limited", f"too many failed attempts; retry in {retry_after} s")
    response["Retry-After"] = str(retry_after)
    return response


def validation_detail(exc: ValidationError) -> dict[str, str] | str:
    if hasattr(exc, "error_dict"):
        return {field: "; ".join(messages) for field, messages in exc.message_dict.items()}
    return "; ".join(exc.messages)


def json_body(request: HttpRequest, *, allow_empty: bool = False, limit: int | None = None) -> dict[str, Any]:
    """The request's JSON object; bodies over `limit` bytes (default WS_MAX_FRAME_BYTES) are 413."""
    limit = limit or settings.WS_MAX_FRAME_BYTES
    if len(request.body) > limit:
        raise ApiError(413, "too_large", f"body over {limit} bytes")
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


def authorization(request: HttpRequest) -> tuple[str, str] | None:
    """(scheme in lower case, credentials) of the Authorization header, if any."""
    value = request.headers.get("Authorization")
    if not value:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    return scheme.lower(), credentials.strip()


def csrf_problem(request: HttpRequest) -> HttpResponse | None:
    """Django's own CSRF check, for views that are csrf_exempt for other reasons."""
    check = CsrfViewMiddleware(lambda _request: None)
    check.process_request(request)
    return check.process_view(request, None, (), {})


def unauthorized(detail: str, scheme: str) -> JsonResponse:
    response = error_response(401, "not_authenticated", detail)
    response["WWW-Authenticate"] = scheme
    return response


def guarded(
    authenticate: Callable[[HttpRequest], HttpResponse | None],
    view: Callable[..., HttpResponse],
    request: HttpRequest,
    *args: Any,
    **kwargs: Any,
) -> HttpResponse:
    """Authenticate, run the view, and turn what it raises into a JSON error."""
    try:
        refused = authenticate(request)
        if refused is not None:
            return refused
        return view(request, *args, **kwargs)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.detail)
    except ValidationError as exc:
        return error_response(400, "invalid_message", validation_detail(exc))
    except UNAVAILABLE_ERRORS as exc:
        log_unavailable(logger, exc, "backing service unavailable path=%s", request.path)
        return error_response(503, "unavailable", "service temporarily unavailable, retry")


def authenticate_bearer(request: HttpRequest) -> HttpResponse | None:
    """Authenticate by bearer token or session (with CSRF); a response when refused."""
    auth = authorization(request)
    if auth is not None and auth[0] == "bearer":
        try:
            verified = verify_token(auth[1])
        except InvalidToken as exc:
            return unauthorized(
                "token expired" if exc.reason == TOKEN_EXPIRED else "invalid token",
                f'Bearer error="invalid_token", error_description="{exc.reason}"',
            )
        request.user = verified.user
        request.auth_method = "token"
        return None
    if not request.user.is_authenticated:
        return unauthorized("log in or send a bearer token", "Bearer")
    request.auth_method = "session"
    return csrf_problem(request)


def _json_view(
    methods: tuple[str, ...], authenticate: Callable[[HttpRequest], HttpResponse | None]
) -> Callable:
    """Decorate a JSON view: these methods only, then `authenticate`, then the view, under `guarded`."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return error_response(405, "method_not_allowed", f"use {', '.join(methods)}")
            return guarded(authenticate, view, request, *args, **kwargs)

        # Django's CSRF check is off: `authenticate` decides whether it applies.
        return csrf_exempt(wrapper)

    return decorate


def api(*methods: str) -> Callable:
    """Decorate a JSON view: allowed methods, a logged-in user, uniform errors."""
    # CSRF is enforced by authenticate_bearer, for session requests only.
    return _json_view(methods, authenticate_bearer)


def _authenticate_if_sent(request: HttpRequest) -> HttpResponse | None:
    """A bearer token when one is sent; else the session, or nobody (the view decides what that may read).

    For safe methods only (see `public_api`): a session then needs no CSRF token.
    """
    auth = authorization(request)
    if auth is not None and auth[0] == "bearer":
        return authenticate_bearer(request)
    return None


def public_api(*methods: str) -> Callable:
    """Decorate a read-only JSON view open to anonymous callers (`request.user` may be anonymous)."""
    if set(methods) - {"GET", "HEAD"}:
        raise ValueError("public_api is for reads: a session that writes needs the CSRF check")
    return _json_view(methods, _authenticate_if_sent)


def _authenticate_api_key(request: HttpRequest) -> HttpResponse | None:
    auth = authorization(request)
    if auth is None or auth[0] != "api-key":
        return unauthorized("send Authorization: Api-Key <key>", "Api-Key")
    key = authenticate_api_key(auth[1])
    if key is None:
        return unauthorized("invalid or revoked API key", "Api-Key")
    request.api_key = key
    request.user = AnonymousUser()
    return None


def api_key_api(*methods: str) -> Callable:
    """Decorate a server-to-server JSON view: `Authorization: Api-Key <key>` only.

    The session cookie is ignored, so CSRF does not apply. `request.api_key`
    is the key's row. The key is looked up on every request: revocation is
    immediate.
    """
    return _json_view(methods, _authenticate_api_key)


@csrf_exempt  # any method: an unknown path is a 404 whatever the client sends
def api_not_found(request: HttpRequest) -> JsonResponse:
    """Every `/api/...` path that no endpoint serves: JSON, never Django's HTML page.

    A route rather than `handler404`, which Django skips while DEBUG is on. It
    also means no APPEND_SLASH redirect under /api/ (a POST cannot follow one),
    so the answer points at the slash instead.
    """
    detail = "no such API endpoint"
    if not request.path.endswith("/") and _is_endpoint(request.path + "/"):
        detail += f"; did you mean {request.path}/ (API paths end with a slash)?"
    return error_response(404, "not_found", detail)


def _is_endpoint(path: str) -> bool:
    try:
        return resolve(path).func is not api_not_found
    except Resolver404:
        return False


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF failures as JSON on the API, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return error_response(403, "forbidden", "CSRF check failed: send the X-CSRFToken header")
    from django.views.csrf import csrf_failure as default

    return default(request, reason)
