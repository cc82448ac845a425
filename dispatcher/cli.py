"""The `dispatcher` command: serve, migrate, accounts, keys. Works against the same database as `serve`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from dispatcher import __version__, accounts, db, logs
from dispatcher.errors import DispatcherError
from dispatcher.settings import Settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dispatcher", description="Event notification service for transactional messaging."
    )
    p.add_argument("--version", action="version", version=f"dispatcher {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the API and the workers")
    serve.add_argument("--host", help="bind address (default: DISPATCHER_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: DISPATCHER_PORT or 8080)")
    serve.add_argument("--role", choices=["all", "api", "worker"], default="all", help="what this process runs")
    serve.add_argument("--processes", type=int, help="processes sharing the port (default: DISPATCHER_PROCESSES)")
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # set by the parent of --processes

    sub.add_parser("migrate", help="apply schema.sql (idempotent)")

    acc = sub.add_parser("accounts", help="manage accounts").add_subparsers(dest="action", required=True)
    acc.add_parser("create", help="create an account").add_argument("name")
    acc.add_parser("list", help="list accounts")

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    kc = keys.add_parser("create", help="create a key; prints it once on stdout")
    kc.add_argument("--account", required=True)
    kc.add_argument("--scope", action="append", choices=accounts.SCOPES, help="repeatable; default '*'")
    kc.add_argument("--allow-ip", action="append", metavar="CIDR", help="repeatable; restrict client addresses")
    keys.add_parser("list", help="list an account's keys").add_argument("--account", required=True)
    keys.add_parser("revoke", help="revoke a key at once").add_argument("key_id", type=int)
    return p


def _err(*parts: Any) -> None:
    print(*parts, file=sys.stderr)


async def _with_db(settings: Settings, fn: Callable[[Any], Awaitable[int]]) -> int:
    database = await db.open_database(settings)
    try:
        async with database.pool.acquire() as conn:
            return await fn(conn)
    finally:
        await database.close()


async def _migrate(conn: Any) -> int:
    version = await db.migrate(conn)
    _err(f"schema at version {version}")
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        return serve(settings, host=args.host, port=args.port, role=args.role, processes=args.processes,
                     listen_fd=args.listen_fd)  # fmt: skip

    async def command(conn: Any) -> int:
        if args.command == "migrate":
            return await _migrate(conn)
        if args.command == "accounts" and args.action == "create":
            row = await accounts.create_account(conn, args.name)
            print(f"{row['id']}\t{row['name']}")
            return 0
        if args.command == "accounts":
            for row in await accounts.list_accounts(conn):
                print(f"{row['id']}\t{row['name']}\t{row['keys']} keys\t{row['created_at']:%Y-%m-%d}")
            return 0
        if args.action == "create":
            account = await accounts.get_account(conn, args.account)
            key_id, key = await accounts.create_key(conn, account["id"], args.scope or ["*"], args.allow_ip)
            _err(f"created key {key_id} for {args.account} (shown once)")
            print(key)
            return 0
        if args.action == "list":
            account = await accounts.get_account(conn, args.account)
            for k in await accounts.list_keys(conn, account["id"]):
                state = f"revoked {k['revoked_at']:%Y-%m-%d}" if k["revoked_at"] else "active"
                cidrs = ",".join(map(str, k["allowed_cidrs"])) or "any"
                used = f"last used {k['last_used_at']:%Y-%m-%d %H:%M}" if k["last_used_at"] else "never used"
                print(f"{k['id']}\t{k['prefix']}…\t{','.join(k['scopes'])}\t{cidrs}\t{state}\t{used}")
            return 0
        if await accounts.revoke_key(conn, args.key_id):
            _err(f"revoked key {args.key_id}")
            return 0
        _err(f"no live key {args.key_id}")
        return 1

    return asyncio.run(_with_db(settings, command))


def _tune_gc() -> None:
    """The cyclic garbage collector ran ~300 times a second under load (CPython collects whenever
    700 more container objects are alive than before), an eighth of the worker's time. Nearly all
    of a request's objects are freed by reference counting; collect cycles every 10,000 instead,
    and leave what was loaded at startup out of every collection."""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    role: str = "all",
    processes: int | None = None,
    listen_fd: int | None = None,
) -> int:
    from aiohttp import web

    from dispatcher import supervisor
    from dispatcher.api.app import create_app, print_first_key

    changes = {"host": host, "port": port, "processes": processes}
    settings = settings.model_copy(update={k: v for k, v in changes.items() if v is not None})
    if listen_fd is None and supervisor.process_count(settings) > 1:
        return supervisor.run(settings, role=role, first_key=print_first_key)
    app = create_app(settings, role=role, bootstrap=settings.bootstrap)
    where: dict[str, Any] = {"host": settings.host, "port": settings.port}
    if listen_fd is not None:
        where = {"sock": supervisor.as_child(app, listen_fd)}
    _tune_gc()
    web.run_app(
        app,
        loop=_event_loop(),
        **where,
        print=lambda msg: _err(msg.splitlines()[0]) if msg and listen_fd is None else None,
        access_log=None,
        shutdown_timeout=settings.shutdown_grace,
    )
    return 0


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where available (Linux, macOS): its C transports halve the cost of socket I/O, which is
    most of what this service does; the stdlib loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    try:
        return _run(args, settings)
    except (DispatcherError, ValueError) as exc:
        _err(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
