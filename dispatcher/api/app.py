"""The application factory: routes, middlewares, and the resources the handlers share. It starts no
background work: dispatcher/runtime.py composes a process from this app and the workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from dispatcher import events
from dispatcher.api import callbacks as callbacks_api
from dispatcher.api import console, health, openapi
from dispatcher.api import events as events_api
from dispatcher.api import portal as portal_api
from dispatcher.api import sending as sending_api
from dispatcher.api import sources as sources_api
from dispatcher.api import suppressions as suppressions_api
from dispatcher.api.auth import KEY_CACHE, RATE_LIMITER, KeyCache, TokenBuckets, authorize
from dispatcher.api.compat import customerio as customerio_api
from dispatcher.api.compat import ens as ens_api
from dispatcher.api.compat import marketingcloud as marketingcloud_api
from dispatcher.api.keys import (
    DB,
    EVENT_WRITER,
    INBOUND_WRITER,
    METRICS,
    OUTBOUND,
    SEND_WRITER,
    SERVICES,
    SETTINGS,
    SOURCE_FETCHER,
)
from dispatcher.api.middlewares import request_context
from dispatcher.api.routing import Call, Route, Router, json_response, query_dict, read_json, validate
from dispatcher.delivery import outbound
from dispatcher.errors import DispatcherError, NotFound
from dispatcher.group_commit import GroupWriter
from dispatcher.inbound import ingest
from dispatcher.metrics import Metrics
from dispatcher.sending import service as sending_service
from dispatcher.settings import Settings

ROLES = ("all", "api", "worker", "inbound")
OPENAPI = web.AppKey("openapi", dict)


def routers() -> list[Router]:
    return [health.router, events_api.router, callbacks_api.router, portal_api.router, sending_api.router,
            sources_api.router, suppressions_api.router, ens_api.router, customerio_api.router,
            marketingcloud_api.router]  # fmt: skip


def _wrap(route: Route) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            if any("\x00" in v for v in request.match_info.values()):
                raise NotFound("not found")
            principal = (
                await authorize(request, route.scope, access_tokens=route.access_tokens) if route.scope else None
            )
            return await run(request, principal)
        except DispatcherError as err:
            if route.error_shape is None:
                raise
            return json_response(route.error_shape.render(err), err.status, headers=err.headers)

    async def run(request: web.Request, principal: Any) -> web.StreamResponse:
        body = None
        if route.body is not None:
            data = await read_json(request, route.max_body or request.app[SETTINGS].max_body_bytes)
            body = data if route.raw_body else validate(route.body, data)
        query = validate(route.query, query_dict(request, route.query)) if route.query is not None else None
        result = await route.handler(Call(request, principal, body, query))
        if isinstance(result, web.StreamResponse):
            return result
        return json_response(result, route.status)

    handle.__name__ = route.handler.__name__
    return handle


async def _openapi(request: web.Request) -> web.Response:
    return json_response(request.app[OPENAPI])


async def resources(app: web.Application, *, role: str) -> AsyncIterator[None]:
    """What the handlers share, on top of the process's database and keyring (dispatcher/runtime.py)."""
    settings = app[SETTINGS]
    app[OUTBOUND] = outbound.make_session(
        allowed=settings.allowed_networks, limit=20, timeout=settings.verification_timeout
    )
    app[callbacks_api.VERIFICATIONS] = set()
    if role in ("all", "api"):
        app[KEY_CACHE] = KeyCache(app[DB])
        await app[KEY_CACHE].start()
        app[EVENT_WRITER] = GroupWriter(app[DB].pool, events.record_groups, max_items=1000)
        app[SEND_WRITER] = GroupWriter(app[DB].pool, sending_service.accept_groups, max_items=1000)
        app[INBOUND_WRITER] = GroupWriter(app[DB].pool, ingest.record_groups, max_items=1000)
        app[SOURCE_FETCHER] = ingest.Fetcher(app[OUTBOUND], settings.sns_cert_url_pattern)
    try:
        yield
    finally:
        verifications: set[asyncio.Task[None]] = app[callbacks_api.VERIFICATIONS]
        for task in verifications:
            task.cancel()
        await asyncio.gather(*verifications, return_exceptions=True)
        await app[OUTBOUND].close()
        await asyncio.sleep(0)  # let the closed connections' transports finish closing on this loop
        for writer in (EVENT_WRITER, SEND_WRITER, INBOUND_WRITER):
            if writer in app:
                await app[writer].aclose()
        if KEY_CACHE in app:
            await app[KEY_CACHE].stop()


def create_app(settings: Settings, *, role: str = "all") -> web.Application:
    """Routes for `role` (a worker serves health only). Its `resources` and the database are added by
    dispatcher/runtime.py, which composes the process."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    table = [r for router in routers() for r in router.routes]
    biggest = max([settings.max_body_bytes] + [r.max_body or 0 for r in table])
    app = web.Application(middlewares=[request_context], client_max_size=biggest)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[SERVICES] = {}
    app[RATE_LIMITER] = TokenBuckets(settings.rate_limit_per_second)
    if role in ("worker", "inbound"):
        table = [r for r in table if r.tag == "health"]
    for route in table:
        app.router.add_route(route.method, route.path, _wrap(route), name=route.handler.__name__)
    if role in ("all", "api"):
        console.setup(app)
    app[OPENAPI] = openapi.build(table)
    app.router.add_get("/openapi.json", _openapi)
    return app
