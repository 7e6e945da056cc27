"""`POST /api/token/`: an access token for credentials or for the logged-in session."""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from realtime.authentication import login_throttle
from realtime.authentication.tokens import issue_token
from realtime.http import (
    ApiError,
    authorization,
    csrf_problem,
    error_response,
    guarded,
    json_body,
    rate_limited,
)

MAX_CREDENTIAL_LENGTH = 1024


def _token_response(user) -> JsonResponse:
    issued = issue_token(user=user)
    response = JsonResponse(
        {"access": issued.access, "token_type": "Bearer", "expires_in": issued.expires_in}
    )
    # RFC 6749 5.1: a response carrying a token must not be cached.
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


@sensitive_variables("body", "password")
def _issue(request: HttpRequest) -> HttpResponse:
    body = json_body(request, allow_empty=True)
    if "username" in body or "password" in body:
        # Credentials: no cookie is involved, so no CSRF check is needed;
        # a forged request could only get a token for the attacker's own account.
        username, password = body.get("username"), body.get("password")
        errors = {
            name: f"a string of 1 to {MAX_CREDENTIAL_LENGTH} characters"
            for name, value in (("username", username), ("password", password))
            if not isinstance(value, str) or not 0 < len(value) <= MAX_CREDENTIAL_LENGTH
        }
        if errors:
            raise ApiError(400, "invalid_message", errors)
        user = authenticate(request, username=username, password=password)
        wait = login_throttle.refused(request)
        if wait is not None:  # too many failures for this username or address: not even tried
            return rate_limited(wait)
        if user is None:  # wrong password, unknown user or inactive user: one answer
            return error_response(401, "invalid_credentials", "wrong username or password")
        return _token_response(user)
    if body:
        raise ApiError(400, "invalid_message", {"username": "required", "password": "required"})
    auth = authorization(request)
    if auth is not None and auth[0] == "bearer":
        # Exchanging a token for a fresh one would let a stolen token live forever.
        raise ApiError(401, "not_authenticated", "a token cannot be renewed with itself; log in")
    if not request.user.is_authenticated:
        raise ApiError(401, "not_authenticated", "send username and password, or log in")
    # The session path rides on a cookie: it needs the CSRF token like any form.
    refused = csrf_problem(request)
    if refused is not None:
        return refused
    return _token_response(request.user)


@csrf_exempt  # the session path runs Django's CSRF check itself
@sensitive_post_parameters("password")
def token(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return error_response(405, "method_not_allowed", "use POST")
    return guarded(lambda _request: None, _issue, request)
