"""The bell's starting count, so the badge is right before the socket says hello."""

from __future__ import annotations

from django.http import HttpRequest

from notifications import selectors


def unread_count(request: HttpRequest) -> dict[str, object]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    # Lazy: only pages that render the bell pay for the query.
    return {"unread_count": lambda: selectors.unread_count(user=user)}
