"""Health endpoints: `/healthz` (the process runs) and `/readyz` (its backends answer)."""

from __future__ import annotations

import asyncio
import logging

from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from realtime import drain, observe

logger = logging.getLogger("realtime.health")

CHECK_TIMEOUT_SECONDS = 2.0


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        logger.warning("readiness: database check failed", exc_info=True)
        return False


async def _layer_ok() -> bool:
    layer = get_channel_layer()
    try:
        # A round trip through the layer: send to a fresh channel, read it back.
        channel = await layer.new_channel()
        await asyncio.wait_for(layer.send(channel, {"type": "ready.check"}), CHECK_TIMEOUT_SECONDS)
        await asyncio.wait_for(layer.receive(channel), CHECK_TIMEOUT_SECONDS)
        return True
    except Exception:
        observe.layer_failure("readiness")
        logger.warning("readiness: channel layer check failed", exc_info=True)
        return False


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    from asgiref.sync import async_to_sync

    if drain.draining():
        # Shutting down: the load balancer should send nobody new here.
        return JsonResponse({"status": "draining"}, status=503)
    checks = {"database": _database_ok(), "channel_layer": async_to_sync(_layer_ok)()}
    ready = all(checks.values())
    body = {"status": "ok" if ready else "unavailable"}
    body.update({name: "ok" if ok else "unavailable" for name, ok in checks.items()})
    return JsonResponse(body, status=200 if ready else 503)
