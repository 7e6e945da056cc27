"""Health endpoints: `/healthz` (the process runs) and `/readyz` (its backends answer)."""

from __future__ import annotations

import asyncio
import logging
import weakref

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from realtime.adapter import drain
from realtime.fanout.echo import LayerEcho
from realtime.operations import observe
from realtime.operations.errors import UNAVAILABLE_ERRORS, log_unavailable

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
    except UNAVAILABLE_ERRORS as exc:
        log_unavailable(logger, exc, "readiness: database check failed")
        return False
    except Exception:
        logger.warning("readiness: database check failed", exc_info=True)
        return False
    finally:
        # A throwaway thread's connection: close it rather than leave it open.
        connection.close()


# One echo channel per event loop (a worker has one; the sync test client makes
# one per request), reused by every probe: one subscription, however many
# probes (see realtime/fanout/echo.py for why not a fresh channel, or send + receive).
_echoes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LayerEcho] = weakref.WeakKeyDictionary()


def _echo() -> LayerEcho:
    loop, layer = asyncio.get_running_loop(), get_channel_layer()
    echo = _echoes.get(loop)
    if echo is None or echo.layer is not layer:  # tests replace the layer between tests
        echo = _echoes[loop] = LayerEcho(layer)
    return echo


def close_readiness_echo():
    """Stop this loop's probe channel, if it has one (tests, before their loop ends)."""
    echo = _echoes.pop(asyncio.get_running_loop(), None)
    return echo.close() if echo is not None else None


async def _layer_round_trip() -> None:
    await _echo().round_trip()


async def _layer_ok() -> bool:
    try:
        # The whole round trip is bounded, subscribing included: a frozen
        # (SIGSTOPped) Redis must not hold the probe for the socket timeout.
        await asyncio.wait_for(_layer_round_trip(), CHECK_TIMEOUT_SECONDS)
        return True
    except UNAVAILABLE_ERRORS as exc:
        observe.layer_failure("readiness")
        log_unavailable(logger, exc, "readiness: channel layer check failed")
        return False
    except Exception:
        observe.layer_failure("readiness")
        logger.warning("readiness: channel layer check failed", exc_info=True)
        return False


async def _database_ok_bounded() -> bool:
    # In a thread of its own (not the shared sync thread, which a hung
    # request could be holding); the answer is bounded even if the query is not.
    try:
        return await asyncio.wait_for(
            sync_to_async(_database_ok, thread_sensitive=False)(), CHECK_TIMEOUT_SECONDS
        )
    except TimeoutError:
        logger.warning("readiness: database check timed out")
        return False


@require_GET
async def readyz(request: HttpRequest) -> JsonResponse:
    if drain.draining():
        # Shutting down: the load balancer should send nobody new here.
        return JsonResponse({"status": "draining"}, status=503)
    database, layer = await asyncio.gather(_database_ok_bounded(), _layer_ok())
    checks = {"database": database, "channel_layer": layer}
    ready = all(checks.values())
    body = {"status": "ok" if ready else "unavailable"}
    body.update({name: "ok" if ok else "unavailable" for name, ok in checks.items()})
    return JsonResponse(body, status=200 if ready else 503)
