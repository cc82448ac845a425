"""What one process runs: the database and keyring it shares, the API (dispatcher/api/app.py), and the
background services its `--role` calls for: the webhook worker, the mail sender, the purger, the
handshake retrier and the bounce listener. `dispatcher serve` calls `create_app`; so do the tests.

    start: database (and its watch) → keyring → first API key → API resources → services
    stop:  the same, in reverse
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web

from dispatcher import accounts, crypto, db, events
from dispatcher.api import app as api
from dispatcher.api.keys import DB, DB_WATCH, KEYRING, METRICS, SERVICES, SETTINGS
from dispatcher.delivery.worker import DeliveryWorker
from dispatcher.handshake import HandshakeRetrier
from dispatcher.inbound.listener import BounceListener
from dispatcher.logs import get_logger
from dispatcher.retention import Purger
from dispatcher.sending.sender import MailSender
from dispatcher.settings import Settings
from dispatcher.watchdog import DatabaseWatch

log = get_logger(__name__)
ROLES = api.ROLES


def create_app(
    settings: Settings,
    *,
    database: db.Database | None = None,
    role: str = "all",
    bootstrap: bool = False,
) -> web.Application:
    """The process for `role`: `database` is the caller's to close; without one the process opens its own."""
    app = api.create_app(settings, role=role)
    app.cleanup_ctx.append(partial(_shared, database=database, bootstrap=bootstrap))
    app.cleanup_ctx.append(partial(api.resources, role=role))
    app.cleanup_ctx.append(partial(_services, role=role))
    return app


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


async def _shared(app: web.Application, *, database: db.Database | None, bootstrap: bool) -> AsyncIterator[None]:
    """The database (opened here unless given), its watch, the keyring, and the first API key."""
    settings = app[SETTINGS]
    owned = database is None
    app[DB] = database if database is not None else await db.open_database(settings, wait=settings.health_db_grace)
    app[DB_WATCH] = DatabaseWatch(app[DB])  # probes the database; brings an embedded server back
    await app[DB_WATCH].start()
    try:
        app[KEYRING] = crypto.load_keyring(settings)
        if bootstrap:
            async with app[DB].pool.acquire() as conn:
                key = await accounts.bootstrap(conn)
            if key:
                print_first_key(key, settings)
        yield
    finally:
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


async def _services(app: web.Application, *, role: str) -> AsyncIterator[None]:
    services = [factory(app) for factory in background_services(role, app[SETTINGS])]
    app[SERVICES]["running"] = services
    for service in services:
        await service.start()
    try:
        yield
    finally:
        for service in reversed(services):
            await service.stop()


def _delivery_worker(app: web.Application) -> DeliveryWorker:
    return DeliveryWorker(app[DB], app[SETTINGS], app[KEYRING], events.record_event, app.get(METRICS))


def _mail_sender(app: web.Application) -> MailSender:
    return MailSender(app[DB], app[SETTINGS], app[KEYRING], metrics=app[METRICS])


def _purger(app: web.Application) -> Purger:
    return Purger(app[DB], app[SETTINGS])


def _handshake_retrier(app: web.Application) -> HandshakeRetrier:
    return HandshakeRetrier(app[DB], app[SETTINGS], app[KEYRING])


def _bounce_listener(app: web.Application) -> BounceListener:
    return BounceListener(app[DB], app[SETTINGS], app[KEYRING].bounce_key, app.get(METRICS))


def background_services(role: str, settings: Settings) -> list[Callable[[web.Application], Any]]:
    """Workers this process runs for `role`; each has async start() and stop(). The bounce listener runs
    in `inbound`, and in `all` when DISPATCHER_INBOUND_SMTP is set."""
    if role == "api":
        return []
    if role == "inbound":
        return [_bounce_listener]
    listener = [_bounce_listener] if role == "all" and settings.inbound_smtp else []
    return [_delivery_worker, _mail_sender, _purger, _handshake_retrier, *listener]
