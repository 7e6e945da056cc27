"""Chat pages: the rooms list and a room. The data comes live from the socket and the JSON API."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


@login_required
def rooms(request: HttpRequest) -> HttpResponse:
    return render(request, "chat/rooms.html")


@login_required
def room(request: HttpRequest, slug: str) -> HttpResponse:
    config = {
        "slug": slug,
        "username": request.user.get_username(),
        "maxBody": settings.CHAT_MAX_BODY,
        "presenceListMax": settings.PRESENCE_LIST_MAX,
    }
    return render(request, "chat/room.html", {"slug": slug, "config": config})
