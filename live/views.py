"""`/live/`: the board of the demo topics, readable without logging in; values come from the socket."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from live import demo


def board(request: HttpRequest) -> HttpResponse:
    rows = [{"symbol": symbol.upper(), "topic": demo.topic(symbol)} for symbol, _ in demo.SYMBOLS]
    config = {"topics": [row["topic"] for row in rows]}
    return render(request, "live/board.html", {"rows": rows, "config": config})
