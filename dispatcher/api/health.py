"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

import asyncio
from typing import Any

from dispatcher.api.keys import DB
from dispatcher.api.routing import Call, Router, json_response

router = Router()


@router.route("GET", "/healthz", summary="The process is up", scope=None, tag="health")
async def healthz(call: Call) -> Any:
    return {"status": "ok"}


@router.route("GET", "/readyz", summary="The database answers", scope=None, tag="health")
async def readyz(call: Call) -> Any:
    try:
        async with asyncio.timeout(2):
            async with call.app[DB].pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
    except Exception:
        return json_response({"status": "unavailable", "database": "unreachable"}, 503)
    return {"status": "ok"}
