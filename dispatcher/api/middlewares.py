"""Request middlewares: request id, the canonical log line, and the one place errors become JSON."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from aiohttp import web

from dispatcher.api.keys import DB, METRICS, PRINCIPAL, REQUEST_ID
from dispatcher.api.routing import json_response
from dispatcher.db import CONNECTION_ERRORS
from dispatcher.errors import DispatcherError, PayloadTooLarge, Unavailable
from dispatcher.logs import get_logger

log = get_logger("dispatcher.http")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    400: "invalid_request",
}


@web.middleware
async def request_context(request: web.Request, handler):  # type: ignore[no-untyped-def]
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    status = 500
    try:
        try:
            response = await _errors_as_json(request, handler)
        except web.HTTPException as redirect:  # a 3xx raised by a handler (the console's redirects)
            status = redirect.status
            redirect.headers["X-Request-Id"] = request_id
            raise
        status = response.status
        response.headers["X-Request-Id"] = request_id
        return response
    finally:
        principal = request.get(PRINCIPAL)
        resource = request.match_info.route.resource
        log.info(
            "request",
            method=request.method,
            path=request.path,
            route=resource.canonical if resource is not None else None,
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            account_id=principal.account_id if principal else None,
            request_id=request_id,
        )
        metrics = request.app.get(METRICS)
        if metrics is not None:
            metrics.observe_request(request, status)


async def _errors_as_json(request: web.Request, handler) -> web.StreamResponse:  # type: ignore[no-untyped-def]
    try:
        return await handler(request)
    except DispatcherError as err:
        return json_response(err.body(), err.status, headers=err.headers)
    except web.HTTPRequestEntityTooLarge:
        too_large = PayloadTooLarge("request body is too large")
        return json_response(too_large.body(), too_large.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return json_response({"error": {"code": code, "message": exc.reason}}, exc.status, headers=headers)
    except CONNECTION_ERRORS as exc:
        log.warning("database unavailable", error=str(exc) or type(exc).__name__, request_id=request[REQUEST_ID])
        db = request.app.get(DB)
        if db is not None:
            await db.discard_connections()
        unavailable = Unavailable("the database is unavailable; retry shortly", headers={"Retry-After": "1"})
        return json_response(unavailable.body(), unavailable.status, headers=unavailable.headers)
    except Exception:
        structlog.get_logger("dispatcher.http").exception("unhandled error", request_id=request[REQUEST_ID])
        body = {
            "error": {
                "code": "internal_error",
                "message": f"internal error (request {request[REQUEST_ID]})",
            }
        }
        return json_response(body, 500)
