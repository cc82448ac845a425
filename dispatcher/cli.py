"""The `dispatcher` command: `serve`, and the operator's commands (in `commands`) against the same database,
found by the same rule (`datadir`). Errors go to stderr as `dispatcher: error: ...`, with exit status 1."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from typing import Any

from dispatcher import __version__, accounts, commands, datadir, db, events, logs, status, suppressions
from dispatcher.errors import DispatcherError
from dispatcher.settings import Settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dispatcher",
        description="Event notification service for transactional messaging.",
        epilog="Every command uses DISPATCHER_DATA_DIR, else the nearest var/ holding a database in the current "
        "directory or a parent, else ./var (only serve and migrate create a database there).",
    )
    p.add_argument("--version", action="version", version=f"dispatcher {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the API and the workers")
    serve.add_argument("--host", help="bind address (default: DISPATCHER_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: DISPATCHER_PORT or 8080)")
    serve.add_argument(
        "--role", choices=["all", "api", "worker", "inbound"], default="all", help="what this process runs"
    )
    serve.add_argument("--processes", type=int, help="processes sharing the port (default: DISPATCHER_PROCESSES)")
    serve.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # set by the parent of --processes

    _command(sub, "migrate", None, "create or upgrade the schema (idempotent); creates the database", creates=True)
    _command(sub, "status", commands.show_status, "the database, its schema and backlogs", reads=True, account=True)
    _accounts_parser(sub.add_parser("accounts", help="manage accounts").add_subparsers(dest="action", required=True))
    _keys_parser(sub.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True))
    _callbacks_parser(
        sub.add_parser("callbacks", help="inspect callbacks").add_subparsers(dest="action", required=True)
    )
    _events_parser(sub.add_parser("events", help="watch events").add_subparsers(dest="action", required=True))
    bounces = sub.add_parser("bounces", help="mail the bounce listener could not read").add_subparsers(
        dest="action", required=True
    )
    unparsed = _command(bounces, "unparsed", commands.bounces_unparsed, "the unreadable mails kept, newest first",
                        reads=True)  # fmt: skip
    unparsed.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="how many (default 50)")
    show = _command(bounces, "show", commands.bounces_show, "one kept mail as received, on stdout", reads=True)
    show.add_argument("mail_id", metavar="ID", type=int)
    sup = sub.add_parser("suppressions", help="an account's suppression list")
    _suppressions_parser(sup.add_subparsers(dest="action", required=True))
    dlv = sub.add_parser("deliveries", help="act on deliveries").add_subparsers(dest="action", required=True)
    retry = _command(dlv, "retry", commands.deliveries_retry, "send a delivery again now, whatever its state",
                     account=True)  # fmt: skip
    retry.add_argument("delivery_id", metavar="ID", help="e.g. dlv_42")
    return p


def _command(
    sub: Any, name: str, run: Any, help: str, *, reads: bool = False, creates: bool = False, account: bool = False
) -> argparse.ArgumentParser:
    """A subcommand; `reads`: it never writes, so it neither applies the schema nor creates a database."""
    cmd: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    cmd.set_defaults(run=run, reads=reads, creates=creates)
    if account:
        cmd.add_argument("--account", metavar="NAME", help="only this account (default: every account)")
    return cmd


def _accounts_parser(acc: Any) -> None:
    _command(acc, "create", commands.accounts_create, "create an account").add_argument("name")
    _command(acc, "list", commands.accounts_list, "list accounts", reads=True)
    update = _command(acc, "update", commands.accounts_update, "change an account's settings")
    update.add_argument("name")
    update.add_argument("--suppress-on-bounce", choices=["on", "off"], required=True,
                        help="whether a hard bounce or a complaint suppresses the recipient (default on)")  # fmt: skip


def _keys_parser(keys: Any) -> None:
    kc = _command(keys, "create", commands.keys_create, "create a key; prints it once on stdout")
    kc.add_argument("--account", required=True)
    kc.add_argument("--scope", action="append", choices=accounts.SCOPES, help="repeatable; default '*'")
    kc.add_argument("--allow-ip", action="append", metavar="CIDR", help="repeatable; restrict client addresses")
    _command(keys, "list", commands.keys_list, "list an account's keys", reads=True).add_argument(
        "--account", required=True
    )
    _command(keys, "revoke", commands.keys_revoke, "revoke a key at once").add_argument("key_id", type=int)


def _callbacks_parser(cbs: Any) -> None:
    _command(cbs, "list", commands.callbacks_list, "list callbacks with their state", reads=True, account=True)
    show = _command(cbs, "show", commands.callbacks_show, "one callback in full", reads=True, account=True)
    show.add_argument("callback_id", metavar="ID", help="e.g. cb_1")


def _suppressions_parser(sup: Any) -> None:
    ls = _command(sup, "list", commands.suppressions_list, "suppressed addresses, oldest first", reads=True)
    ls.add_argument("--account", metavar="NAME", required=True)
    ls.add_argument("--reason", choices=suppressions.REASONS, help="only this reason")
    ls.add_argument("--address-prefix", metavar="PREFIX", help="only addresses starting with this")
    rm = _command(sup, "delete", commands.suppressions_delete, "take an address off the list: sends to it go out")
    rm.add_argument("--account", metavar="NAME", required=True)
    rm.add_argument("address", metavar="ADDRESS")


def _events_parser(evs: Any) -> None:
    tail = _command(evs, "tail", commands.events_tail, "the latest events, oldest first", reads=True, account=True)
    tail.add_argument("-n", "--lines", type=int, default=20, metavar="N", help="how many to show first (default 20)")
    tail.add_argument("-f", "--follow", action="store_true", help="then print new events as they are recorded")
    tail.add_argument("--type", action="append", choices=events.EVENT_TYPES, help="repeatable; default every type")
    tail.add_argument("--message-key", metavar="KEY", help="only this message's events")


class NoDatabase(Exception):
    """A command that needs a database found none; it creates nothing."""


def _err(*parts: Any) -> None:
    print("dispatcher: error:", *parts, file=sys.stderr)


def _check_present(settings: Settings, args: argparse.Namespace) -> None:
    if args.creates or settings.database_url or datadir.has_embedded_database(settings.data_dir):
        return
    raise NoDatabase(
        f"no database in {settings.data_dir}; run this where `dispatcher serve` runs (or below it), "
        "or set DISPATCHER_DATA_DIR or DISPATCHER_DATABASE_URL"
    )


async def _with_db(settings: Settings, args: argparse.Namespace) -> int:
    _check_present(settings, args)
    settings = settings.model_copy(update={"db_pool_min": 1, "db_pool_max": 2})
    database = await db.open_database(settings, run_migrations=not args.reads)
    try:
        async with database.pool.acquire() as conn:
            if args.reads and not await status.has_schema(conn):
                raise NoDatabase("the database has no dispatcher schema yet: run `dispatcher migrate` or `serve`")
            return int(await (args.run or _migrate)(conn, args, settings))
    finally:
        await database.close()


async def _migrate(conn: Any, args: argparse.Namespace, settings: Settings) -> int:
    version = await db.migrate(conn)
    print(f"schema at version {version}", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        return serve(settings, host=args.host, port=args.port, role=args.role, processes=args.processes,
                     listen_fd=args.listen_fd)  # fmt: skip
    return asyncio.run(_with_db(settings, args))


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
    from dispatcher.runtime import create_app, print_first_key

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
        print=lambda msg: print(msg.splitlines()[0], file=sys.stderr) if msg and listen_fd is None else None,
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
    settings = datadir.find(Settings())
    logs.configure(settings.log_level, settings.log_format)
    try:
        return _run(args, settings)
    except (DispatcherError, NoDatabase, ValueError) as exc:
        _err(exc)
    except db.DB_ERRORS as exc:
        _err(f"database: {exc or type(exc).__name__}")
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
