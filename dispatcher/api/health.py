"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from aiohttp import web

from dispatcher.api.keys import DB, DB_WATCH, METRICS, SETTINGS
from dispatcher.api.routing import Call, Router, json_response
from dispatcher.db import ping
from dispatcher.errors import NotFound, Unauthorized
from dispatcher.metrics import CONTENT_TYPE

router = Router()


@router.route(
    "GET",
    "/healthz",
    summary="The process is up, and its database has not been lost for long",
    scope=None,
    tag="health",
)
async def healthz(call: Call) -> Any:
    # Past the grace period a restart is the remaining remedy (an orchestrator's liveness probe
    # does it); a shorter outage is readiness's business.
    grace = call.app[SETTINGS].health_db_grace
    down = call.app[DB_WATCH].unreachable_for() if DB_WATCH in call.app else 0.0
    if grace and down > grace:
        return json_response({"status": "unavailable", "database": f"unreachable for {down:.0f} s"}, 503)
    return {"status": "ok"}


@router.route("GET", "/readyz", summary="The database answers", scope=None, tag="health")
async def readyz(call: Call) -> Any:
    try:
        async with asyncio.timeout(2):
            async with call.app[DB].pool.acquire() as conn:
                await ping(conn)
    except Exception:
        return json_response({"status": "unavailable", "database": "unreachable"}, 503)
    return {"status": "ok"}


@router.route(
    "GET",
    "/metrics",
    summary="Prometheus metrics (bearer DISPATCHER_METRICS_TOKEN; off without it)",
    scope=None,
    tag="health",
    errors={401: "Missing or wrong metrics token", 404: "Metrics are off (no DISPATCHER_METRICS_TOKEN)"},
)
async def metrics(call: Call) -> Any:
    # Counts span every account, so they are never served without a credential.
    token = call.app[SETTINGS].metrics_token
    if not token:
        raise NotFound("metrics are off: set DISPATCHER_METRICS_TOKEN and send it as a bearer token")
    given = call.request.headers.get("Authorization", "").encode()
    if not hmac.compare_digest(given, f"Bearer {token}".encode()):
        raise Unauthorized("metrics need 'Authorization: Bearer <DISPATCHER_METRICS_TOKEN>'")
    body = await call.app[METRICS].render(call.app[DB].pool)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
