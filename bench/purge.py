"""`purge`: retention dropping a day of history against deleting the same rows in batches, and ingest
latency while days are dropped, in one run."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from bench import workload
from bench.history import bench_ids, day_start, log, store_days
from bench.report import Result, percentile
from bench.workload import event, register_callback
from dispatcher import partitions

if TYPE_CHECKING:
    from bench.scenarios import Env

RETENTION_DAYS = 7
# The service keeps 7 days; its own purge runs at start (nothing is old then) and not again in the run.
SERVICE_ENV = {"DISPATCHER_RETENTION_DAYS": str(RETENTION_DAYS), "DISPATCHER_PURGE_INTERVAL": "86400"}
BATCH = 1000  # rows per DELETE, as the service's batch steps (DISPATCHER_PURGE_BATCH)
INGEST_RATE = 200.0  # requests/s, one small batch each
INGEST_BATCH = 10
QUIET_SECONDS = 5.0  # ingest without a purge
LEAD_SECONDS = 1.0  # ingest before the first drop

# The baseline: retention as it was before history was partitioned (schema version 8). The stored days
# (but the one dropped first) are copied into tables shaped as version 8 had them (all of history in one
# table each, the same indexes, deliveries and receipts going with their event by ON DELETE CASCADE),
# and version 8's own statements (dispatcher/sql/retention.sql at that version) purge the oldest day:
# events not still being delivered, 1,000 at a time, then the attempt log; then the VACUUM the deletes
# leave to do.
V8_TABLES = """
CREATE TABLE v8_events (LIKE events INCLUDING DEFAULTS, PRIMARY KEY (id));
CREATE UNIQUE INDEX v8_events_client_id ON v8_events (account_id, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX v8_events_account ON v8_events (account_id, id);
CREATE INDEX v8_events_message ON v8_events (account_id, message_key, id);
CREATE INDEX v8_events_type ON v8_events (account_id, type, id);
CREATE INDEX v8_events_definition ON v8_events (account_id, definition_key, id) WHERE definition_key IS NOT NULL;
CREATE INDEX v8_events_recorded ON v8_events (recorded_at);
CREATE TABLE v8_deliveries (
    id bigint PRIMARY KEY, account_id bigint NOT NULL,
    event_id bigint NOT NULL REFERENCES v8_events ON DELETE CASCADE, callback_id bigint NOT NULL,
    status text NOT NULL, attempts integer NOT NULL, retry_base integer NOT NULL, next_attempt_at timestamptz NOT NULL,
    lease_owner text, created_at timestamptz NOT NULL, last_attempt_at timestamptz, last_status_code integer,
    last_error text, attempt_ids bigint[] NOT NULL, leased_until timestamptz NOT NULL DEFAULT '-infinity',
    UNIQUE (event_id, callback_id)
) WITH (fillfactor = 50);
CREATE INDEX v8_deliveries_claim ON v8_deliveries (callback_id, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX v8_deliveries_history ON v8_deliveries (callback_id, id);
CREATE TABLE v8_attempts (LIKE attempts INCLUDING DEFAULTS, PRIMARY KEY (id));
CREATE INDEX v8_attempts_callback ON v8_attempts (callback_id, id);
CREATE INDEX v8_attempts_started ON v8_attempts (started_at);
CREATE TABLE v8_source_receipts (
    event_id bigint PRIMARY KEY REFERENCES v8_events ON DELETE CASCADE, account_id bigint NOT NULL,
    source_id bigint NOT NULL, received_at timestamptz NOT NULL, raw jsonb NOT NULL
);
"""
V8_COPY = """
INSERT INTO v8_events SELECT * FROM {events};
INSERT INTO v8_deliveries (id, account_id, event_id, callback_id, status, attempts, retry_base, next_attempt_at,
                           created_at, last_attempt_at, last_status_code, last_error, attempt_ids)
SELECT id, account_id, event_id, callback_id, status, attempts, retry_base, finished_at, created_at, last_attempt_at,
       last_status_code, last_error, attempt_ids FROM {deliveries};
INSERT INTO v8_attempts SELECT * FROM {attempts};
INSERT INTO v8_source_receipts SELECT event_id, account_id, source_id, received_at, raw FROM {source_receipts};
"""
V8_PURGE = [
    """DELETE FROM v8_events WHERE id IN (
    SELECT e.id FROM v8_events e
    WHERE e.recorded_at < now() - make_interval(secs => $1)
      AND NOT EXISTS (SELECT 1 FROM v8_deliveries d WHERE d.event_id = e.id AND d.status = 'pending')
    LIMIT $2)""",
    """DELETE FROM v8_attempts WHERE id IN (
    SELECT id FROM v8_attempts WHERE started_at < now() - make_interval(secs => $1) LIMIT $2)""",
]


def _day(day: date) -> list[partitions.Partition]:
    return [partitions.Partition(t, day) for t in partitions.TABLES]


async def _drop(conn: asyncpg.Connection, day: date) -> float:
    t0 = time.monotonic()
    await partitions.drop(conn, _day(day))
    return time.monotonic() - t0


async def _copy_as_version_8(conn: asyncpg.Connection, days: list[date]) -> None:
    """These days' rows, copied into version 8's tables, where all of history lived in one table each."""
    await conn.execute(V8_TABLES)
    for day in days:
        await conn.execute(V8_COPY.format(**{p.table: p.name for p in _day(day)}), timeout=None)
    await conn.execute("VACUUM ANALYZE v8_events, v8_deliveries, v8_attempts, v8_source_receipts", timeout=None)


async def _v8_rows(conn: asyncpg.Connection) -> int:
    return sum([await conn.fetchval(f"SELECT count(*) FROM v8_{t}") for t in partitions.TABLES])


async def _delete(conn: asyncpg.Connection, before: datetime) -> tuple[float, int]:
    """Version 8's purge of what was recorded before `before`, BATCH events (with their deliveries and
    receipts) or attempts at a time, each batch its own transaction: (seconds, batches)."""
    batches = 0
    t0 = time.monotonic()
    for statement in V8_PURGE:
        while True:
            age = (datetime.now(UTC) - before).total_seconds()  # the statement's cutoff is now() - age
            n = int((await conn.execute(statement, age, BATCH, timeout=None)).split()[-1])
            batches += 1
            if n < BATCH:
                break
    return time.monotonic() - t0, batches


async def _count(conn: asyncpg.Connection, day: date) -> int:
    return await conn.fetchval(
        "SELECT count(*) FROM events WHERE recorded_at >= $1 AND recorded_at < $2",
        day_start(day), day_start(day + timedelta(days=1)),
    )  # fmt: skip


async def _steady_ingest(env: Env, stop: asyncio.Event, prefix: str) -> list[tuple[float, float]]:
    """POST /v1/events, INGEST_BATCH events per request, INGEST_RATE requests/s, until `stop`:
    (start, milliseconds) per request."""
    timings: list[tuple[float, float]] = []
    tasks = []

    async def one(i: int) -> None:
        items = [event(i * INGEST_BATCH + j, prefix) for j in range(INGEST_BATCH)]
        t0 = time.monotonic()
        await env.api.call("POST", "/v1/events", {"events": items})
        timings.append((t0, (time.monotonic() - t0) * 1000))

    start = time.monotonic()
    i = 0
    while not stop.is_set():
        delay = start + i / INGEST_RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
        i += 1
    await asyncio.gather(*tasks)
    return timings


async def _quiet(env: Env) -> list[float]:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(QUIET_SECONDS, stop.set)
    async with env.profile("ingest alone"):
        timings = await _steady_ingest(env, stop, "quiet")
    return [ms for _, ms in timings]


async def _during_drops(env: Env, days: list[date]) -> tuple[list[float], list[float], float]:
    """Ingest while the days are dropped one after another (after LEAD_SECONDS of ingest alone):
    (latencies of the requests started between the first drop's start and the last one's end,
    seconds per drop, that window's length)."""
    stop = asyncio.Event()
    conn = await env.pg.connect()
    try:
        async with env.profile("ingest during drops"):
            ingest = asyncio.create_task(_steady_ingest(env, stop, "during"))
            await asyncio.sleep(LEAD_SECONDS)
            t0 = time.monotonic()
            drops = [await _drop(conn, d) for d in days]
            t1 = time.monotonic()
            await asyncio.sleep(0.2)
            stop.set()
            timings = await ingest
    finally:
        await conn.close()
    return [ms for start, ms in timings if t0 <= start <= t1], drops, t1 - t0


async def purge(env: Env) -> Result:
    per_day = env.args.day_events
    extra = env.args.drop_days
    hook = await register_callback(env.api, env.receiver, "hook")
    await workload.set_status(env.api, [hook], "disabled")  # ingest's fan-out rows are written, nothing is sent
    first = partitions.today() - timedelta(days=RETENTION_DAYS + 3 + extra)
    days = [first + timedelta(days=d) for d in range(2 + extra)]  # all older than the retention
    log(f"storing {len(days)} days of {per_day:,} events with a delivery and an attempt each, {days[0]}..{days[-1]}")
    taken = await store_days(env.pg.url, *await bench_ids(env, hook), days, per_day)
    log(f"stored in {taken['insert']:,.0f} s, vacuumed in {taken['vacuum']:,.0f} s")
    dropped_day, deleted_day, under_load = days[0], days[1], days[2:]

    conn = await env.pg.connect()
    try:
        assert await _count(conn, dropped_day) == per_day
        await _copy_as_version_8(conn, [deleted_day, *under_load])
        stored = await _v8_rows(conn)
        await conn.execute("CHECKPOINT")
        log(f"copied {deleted_day}..{under_load[-1]} into version 8's tables: {stored:,} rows")
        async with env.profile("drop"):
            drop_s = await _drop(conn, dropped_day)
        log(f"dropped {dropped_day} (events, deliveries, attempts, source_receipts) in {drop_s * 1000:,.0f} ms")
    finally:
        await conn.close()

    log(f"ingest alone: {INGEST_RATE:g} requests/s of {INGEST_BATCH} events for {QUIET_SECONDS:g} s")
    quiet = await _quiet(env)
    log(f"ingest while {len(under_load)} days are dropped one after another")
    during, drops, window = await _during_drops(env, under_load)
    log(f"drops under ingest: {', '.join(f'{s * 1000:,.0f}' for s in drops)} ms; {len(during)} requests in the window")

    conn = await env.pg.connect()
    try:
        async with env.profile("delete"):
            delete_s, batches = await _delete(conn, day_start(deleted_day + timedelta(days=1)))
        rows = stored - await _v8_rows(conn)
        log(f"version 8's purge of {deleted_day}: {rows:,} rows in {batches:,} batches of {BATCH} in {delete_s:,.1f} s")
        assert rows >= 3 * per_day, rows  # the whole day (and what its last milliseconds' clock drift adds)
        # What the deletes leave to do: their dead rows and index entries.
        t0 = time.monotonic()
        await conn.execute("VACUUM v8_events, v8_deliveries, v8_attempts, v8_source_receipts", timeout=None)
        vacuum_s = time.monotonic() - t0
        log(f"vacuumed version 8's tables after the purge in {vacuum_s:,.1f} s")
        await conn.execute("DROP TABLE v8_events, v8_deliveries, v8_attempts, v8_source_receipts CASCADE")
    finally:
        await conn.close()

    # rates in events purged per second (the day's other rows go with them): the ratio is drop's speedup
    # the baseline is the deletes with the vacuum they need: rows are not gone until it has run
    result = Result("purge", per_day, per_day / drop_s, "events/s", per_day / (delete_s + vacuum_s))
    result.p50_ms, result.p99_ms = percentile(during, 50), percentile(during, 99)
    quiet_p99 = percentile(quiet, 99)
    result.target = (
        "drop < 1 s, >= 50x faster than batched deletes and their vacuum, ingest p99 during drops <= 2x without"
    )
    result.met = drop_s < 1 and (result.ratio or 0) >= 50 and result.p99_ms <= 2 * quiet_p99
    result.details = {
        "drop_ms": drop_s * 1000,
        "delete_s": delete_s,
        "vacuum_after_delete_s": vacuum_s,
        "ratio_deletes_alone": delete_s / drop_s,
        "deleted_rows": rows,
        "delete_batches": batches,
        "quiet_p50_ms": percentile(quiet, 50),
        "quiet_p99_ms": quiet_p99,
        "p99_ratio": result.p99_ms / quiet_p99,
        "drops_under_load": len(drops),
        "drop_under_load_max_ms": max(drops) * 1000,
        "window_s": window,
        "window_requests": len(during),
        "store_s": taken["insert"],
    }
    return result
