from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from notifications import selectors
from notifications.serializers import notification_dict


@login_required
def inbox(request: HttpRequest) -> HttpResponse:
    rows, next_before = selectors.inbox_page(user=request.user, limit=settings.API_PAGE_DEFAULT)
    return render(
        request,
        "notifications/inbox.html",
        {"initial": {"results": [notification_dict(r) for r in rows], "next_before": next_before}},
    )
