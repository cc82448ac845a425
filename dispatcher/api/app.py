"""The application factory: routes, middlewares, and the lifecycle of pools and background workers."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from dispatcher import accounts, crypto, db, events
from dispatcher.api import callbacks as callbacks_api
from dispatcher.api import events as events_api
from dispatcher.api import health, openapi
from dispatcher.api import sending as sending_api
from dispatcher.api.auth import KEY_CACHE, RATE_LIMITER, KeyCache, TokenBuckets, authorize
from dispatcher.api.keys import DB, DB_WATCH, EVENT_WRITER, KEYRING, METRICS, OUTBOUND, SEND_WRITER, SERVICES, SETTINGS
from dispatcher.api.middlewares import request_context
from dispatcher.api.routing import Call, Route, Router, json_response, query_dict, read_json, validate
from dispatcher.delivery import outbound
from dispatcher.delivery.worker import DeliveryWorker
from dispatcher.errors import NotFound
from dispatcher.group_commit import GroupWriter
from dispatcher.handshake import HandshakeRetrier
from dispatcher.logs import get_logger
from dispatcher.metrics import Metrics
from dispatcher.retention import Purger
from dispatcher.sending import service as sending_service
from dispatcher.sending.sender import MailSender
from dispatcher.settings import Settings
from dispatcher.watchdog import DatabaseWatch

log = get_logger(__name__)
ROLES = ("all", "api", "worker")
OPENAPI = web.AppKey("openapi", dict)


def routers() -> list[Router]:
    return [health.router, events_api.router, callbacks_api.router, sending_api.router]


def _wrap(route: Route) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.StreamResponse:
        if any("\x00" in v for v in request.match_info.values()):
            raise NotFound("not found")
        return await run(request, await authorize(request, route.scope) if route.scope else None)

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


def print_first_key(key: str, settings: Settings) -> None:
    url = f"http://{settings.host}:{settings.port}"
    print(
        f"\n  dispatcher: created account 'default' with an API key (shown once, store it now):\n\n"
        f"    {key}\n\n"
        f"  try: curl -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' "
        f'-d \'{{"type":"sent","messageKey":"hello-1"}}\' {url}/v1/events\n',
        file=sys.stderr,
        flush=True,
    )


async def _lifecycle(
    app: web.Application, *, database: db.Database | None, bootstrap: bool, role: str
) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    owned = database is None
    app[DB] = database if database is not None else await db.open_database(settings, wait=settings.health_db_grace)
    app[DB_WATCH] = DatabaseWatch(app[DB])  # probes the database; brings an embedded server back
    await app[DB_WATCH].start()
    app[KEYRING] = crypto.load_keyring(settings)
    app[OUTBOUND] = outbound.make_session(
        allowed=settings.allowed_networks, limit=20, timeout=settings.verification_timeout
    )
    app[callbacks_api.VERIFICATIONS] = set()
    if bootstrap:
        async with app[DB].pool.acquire() as conn:
            key = await accounts.bootstrap(conn)
        if key:
            print_first_key(key, settings)
    if role != "worker":
        app[KEY_CACHE] = KeyCache(app[DB])
        await app[KEY_CACHE].start()
        app[EVENT_WRITER] = GroupWriter(app[DB].pool, events.record_groups, max_items=1000)
        app[SEND_WRITER] = GroupWriter(app[DB].pool, sending_service.accept_groups, max_items=1000)
    services = [factory(app) for factory in background_services(role)]
    app[SERVICES]["running"] = services
    for service in services:
        await service.start()
    try:
        yield
    finally:
        for service in reversed(services):
            await service.stop()
        verifications: set[asyncio.Task[None]] = app[callbacks_api.VERIFICATIONS]
        for task in verifications:
            task.cancel()
        await asyncio.gather(*verifications, return_exceptions=True)
        await app[OUTBOUND].close()
        await asyncio.sleep(0)  # let the closed connections' transports finish closing on this loop
        for writer in (EVENT_WRITER, SEND_WRITER):
            if writer in app:
                await app[writer].aclose()
        if KEY_CACHE in app:
            await app[KEY_CACHE].stop()
        await app[DB_WATCH].stop()
        if owned:
            await app[DB].close()
            if app[DB].server is not None:
                _say_whether_postgres_stays(app[DB].server.pgdata)


def _say_whether_postgres_stays(pgdata: Path) -> None:
    others = db.other_holders(pgdata)
    if others:
        log.info("embedded postgres stays up for other processes until the last one exits", pids=others)
    else:
        log.info("embedded postgres stops as this process exits: no other process uses it")


def _delivery_worker(app: web.Application) -> DeliveryWorker:
    return DeliveryWorker(app[DB], app[SETTINGS], app[KEYRING], app.get(METRICS))


def _mail_sender(app: web.Application) -> MailSender:
    return MailSender(app[DB], app[SETTINGS], app[KEYRING], metrics=app[METRICS])


def _purger(app: web.Application) -> Purger:
    return Purger(app[DB], app[SETTINGS])


def _handshake_retrier(app: web.Application) -> HandshakeRetrier:
    return HandshakeRetrier(app[DB], app[SETTINGS], app[KEYRING])


def background_services(role: str) -> list[Callable[[web.Application], Any]]:
    """Workers this process runs for `role`; each has async start() and stop()."""
    if role == "api":
        return []
    return [_delivery_worker, _mail_sender, _purger, _handshake_retrier]


def create_app(
    settings: Settings,
    *,
    database: db.Database | None = None,
    role: str = "all",
    bootstrap: bool = False,
) -> web.Application:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    table = [r for router in routers() for r in router.routes]
    biggest = max([settings.max_body_bytes] + [r.max_body or 0 for r in table])
    app = web.Application(middlewares=[request_context], client_max_size=biggest)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[SERVICES] = {}
    app[RATE_LIMITER] = TokenBuckets(settings.rate_limit_per_second)
    if role == "worker":
        table = [r for r in table if r.tag == "health"]
    for route in table:
        app.router.add_route(route.method, route.path, _wrap(route), name=route.handler.__name__)
    app[OPENAPI] = openapi.build(table)
    app.router.add_get("/openapi.json", _openapi)
    app.cleanup_ctx.append(partial(_lifecycle, database=database, bootstrap=bootstrap, role=role))
    return app
