"""Scenario `upgrade`: how long migration 0009 (history partitioned by day, the queue apart from it)
takes per million events. A version 8 database, built from the version 1 schema and migrations 2 to
8, holds N events (--events, default 1,000,000) recorded over 30 days, each with one finished
delivery and one attempt, and 1 % more deliveries still pending; it is vacuumed and analysed as a
live database would be, and `db.migrate` is timed. The database size is sampled while it runs (the
copy needs the old and the new tables side by side), and the write-ahead log it wrote is counted. Runs in its own database next to the bench's."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from bench.report import Result
from bench.service import with_database
from dispatcher import db

if TYPE_CHECKING:
    from bench.scenarios import Env

SCHEMA_V1 = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "schema_v1.sql"
DAYS = 30

FILL_SQL = [
    """INSERT INTO accounts (name) VALUES ('upgrade')""",
    """INSERT INTO callbacks (account_id, name, url, status)
       SELECT a.id, n.hook, 'https://example.com/' || n.hook, 'active'
       FROM accounts a, unnest('{hook,slow}'::text[]) n(hook)""",
    # recorded_at: spread evenly over the last 30 days, oldest first, as ids grow
    """INSERT INTO events (id, account_id, client_id, type, message_key, definition_key, recipient, occurred_at,
                           recorded_at, data)
       OVERRIDING SYSTEM VALUE
       SELECT g, (SELECT id FROM accounts), 'c-' || g, (ARRAY['sent', 'delivered', 'opened', 'clicked'])[1 + g % 4],
              'm-' || (g / 4), 'welcome', 'user' || g || '@example.com', t, t,
              jsonb_build_object('orderId', g, 'campaign', 'spring')
       FROM generate_series(1, $1::int) g,
            LATERAL (SELECT now() - make_interval(secs => ($1 - g) * ($2 * 86400.0 / $1))) r(t)""",
    """SELECT setval(pg_get_serial_sequence('events', 'id'), $1)""",
    # the attempt log: one request per event, a second after it
    """INSERT INTO attempts (id, account_id, callback_id, webhook_id, events, started_at, duration_ms, status_code,
                             response_body)
       OVERRIDING SYSTEM VALUE
       SELECT e.id, e.account_id, c.id, 'msg_' || e.id, 1, e.recorded_at + interval '1 second', 12.5, 200, 'ok'
       FROM events e JOIN callbacks c ON c.name = 'hook'""",
    """SELECT setval(pg_get_serial_sequence('attempts', 'id'), $1)""",
    """INSERT INTO deliveries (id, account_id, event_id, callback_id, status, attempts, created_at, next_attempt_at,
                               last_attempt_at, last_status_code, attempt_ids)
       OVERRIDING SYSTEM VALUE
       SELECT e.id, e.account_id, e.id, c.id, 'succeeded', 1, e.recorded_at, e.recorded_at,
              e.recorded_at + interval '1 second', 200, ARRAY[e.id]
       FROM events e JOIN callbacks c ON c.name = 'hook'""",
    # 1 % more, still pending for the slow callback
    """INSERT INTO deliveries (id, account_id, event_id, callback_id, created_at)
       OVERRIDING SYSTEM VALUE
       SELECT $1 + e.id, e.account_id, e.id, c.id, e.recorded_at
       FROM events e JOIN callbacks c ON c.name = 'slow' WHERE e.id % 100 = 0""",
    """SELECT setval(pg_get_serial_sequence('deliveries', 'id'), $1 + $1 / 100)""",
]


def _log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


async def build_version_8(conn: asyncpg.Connection) -> None:
    """The schema a version 8 release left: version 1's schema.sql, then migrations 2 to 8."""
    await conn.execute(SCHEMA_V1.read_text())
    for version, (_, text) in db.migrations().items():
        if version <= 8:
            async with conn.transaction():
                await conn.execute(text)
                await conn.execute(db.queries("db")["record_migration"], version)


async def fill(conn: asyncpg.Connection, n: int) -> None:
    for sql in FILL_SQL:
        params = max((int(i) for i in re.findall(r"\$(\d)", sql)), default=0)  # $1: n, $2: days
        await conn.execute(sql, *[n, DAYS][:params], timeout=3600)
    for table in ("events", "deliveries", "attempts"):
        await conn.execute(f"VACUUM ANALYZE {table}", timeout=3600)
    await conn.execute("CHECKPOINT")  # the fill's dirty pages are not the migration's to write


async def _sample_size(url: str, sizes: list[int], stop: asyncio.Event) -> None:
    """The database's size every half second until `stop`, on a connection of its own."""
    conn = await asyncpg.connect(url)
    try:
        while not stop.is_set():
            sizes.append(await conn.fetchval("SELECT pg_database_size(current_database())"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        await conn.close()


async def upgrade(env: Env) -> Result:
    args = env.args
    n = args.events or 1_000_000
    admin_url = env.pg.admin_url
    name = f"{env.pg.name}_upgrade"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
        url = with_database(admin_url, name)
        conn = await asyncpg.connect(url)
        try:
            _log(f"building a version 8 database with {n:,} events over {DAYS} days")
            t0 = time.monotonic()
            await build_version_8(conn)
            await fill(conn, n)
            before = await conn.fetchval("SELECT pg_database_size(current_database())")
            rows = await conn.fetchval(
                "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM deliveries) + (SELECT count(*) FROM attempts)"
            )
            _log(f"filled in {time.monotonic() - t0:.0f}s: {rows:,} rows, {before / 2**20:,.0f} MiB; migrating")
            sizes: list[int] = []
            stop = asyncio.Event()
            sampler = asyncio.create_task(_sample_size(url, sizes, stop))
            wal = await conn.fetchval("SELECT pg_current_wal_lsn()")
            t0 = time.monotonic()
            version = await db.migrate(conn)
            seconds = time.monotonic() - t0
            stop.set()
            await sampler
            after = await conn.fetchval("SELECT pg_database_size(current_database())")
            wal = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1)", wal)
            partitions = await conn.fetchval(
                "SELECT count(*) FROM pg_inherits JOIN pg_class c ON c.oid = inhrelid WHERE c.relkind = 'r'"
            )
            moved = await conn.fetchval(
                "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM deliveries)"
                " + (SELECT count(*) FROM queue) + (SELECT count(*) FROM attempts)"
            )
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
    assert version == db.SCHEMA_VERSION and moved == rows, (version, moved, rows)
    mib = 2**20
    result = Result("upgrade", n, n / seconds, "events/s")
    result.details = {
        "seconds": seconds,
        "s_per_million": seconds * 1_000_000 / n,
        "rows_copied": rows,
        "partitions": partitions,
        "mib_before": before / mib,
        "mib_peak": max([before, after, *sizes]) / mib,
        "mib_after": after / mib,
        "mib_wal": float(wal) / mib,
    }
    return result
