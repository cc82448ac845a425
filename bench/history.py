"""`history`: ingest, delivery and a message's timeline with 30 days of history already stored, against
the same service on the empty database in the same run. Also the SQL that stores days of history,
which `purge` shares."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg

from bench import workload
from bench.report import Result, percentile
from bench.workload import deliver_round, event, post_events, register_callback
from dispatcher import activity, partitions
from dispatcher.db import queries

if TYPE_CHECKING:
    from bench.scenarios import Env

DAYS = 30  # history spans the 30 days before today
EVENTS_PER_KEY = 10  # each messageKey gets about this many events, all on the same day
ROUNDS = 5  # ingest and deliver are each measured this many times per phase; the median counts
DELIVER_EVENTS = 5000  # per deliver round, as `deliver`
TIMELINE_KEYS = 2000
OVERVIEW_RUNS = 30  # each overview query, per window, after 3 that do not count

# One day of history for one account and callback: events spread evenly over the day, each with one
# finished delivery and the one attempt that finished it (ids from the queue's and the attempt log's
# own sequences, so the service's later rows follow them). Event g of the day belongs to message
# $6 + g % $5, so a message's events lie hours apart on the same day, as a send's events do.
STORE_DAY = """
WITH ev AS (
    INSERT INTO events (account_id, type, message_key, definition_key, recipient, occurred_at, recorded_at, data)
    SELECT $1, (ARRAY['queued', 'sent', 'delivered', 'opened', 'clicked'])[1 + (g / $5) % 5],
           'hist-' || ($6 + g % $5), 'order-confirmation', 'user' || ($6 + g % $5) || '@example.com', t, t,
           jsonb_build_object('orderId', $6 + g % $5, 'subject', 'Your order has shipped')
    FROM generate_series(0, $4::int - 1) g,
         LATERAL (SELECT $3::timestamptz + make_interval(secs => g * 86390.0 / $4)) AS at(t)
    RETURNING id, recorded_at
),
ids AS (
    SELECT id AS event_id, recorded_at, nextval($7::regclass) AS delivery_id, nextval($8::regclass) AS attempt_id
    FROM ev
),
logged AS (
    INSERT INTO attempts (id, account_id, callback_id, webhook_id, events, started_at, duration_ms, status_code)
    OVERRIDING SYSTEM VALUE
    SELECT attempt_id, $1, $2, 'msg_' || delivery_id, 1, recorded_at + interval '5 ms', 3.5, 200 FROM ids
)
INSERT INTO deliveries (id, account_id, event_id, callback_id, status, attempts, retry_base, created_at, finished_at,
                        last_attempt_at, last_status_code, attempt_ids)
SELECT delivery_id, $1, event_id, $2, 'succeeded', 1, 0, recorded_at, recorded_at + interval '9 ms',
       recorded_at + interval '5 ms', 200, ARRAY[attempt_id]
FROM ids
"""
HISTORY_TABLES = ("events", "deliveries", "attempts")


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def day_start(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC)


async def store_days(url: str, account_id: int, callback_id: int, days: list[date], per_day: int) -> dict[str, float]:
    """Store `per_day` events (with their deliveries and attempts) on each day, from two connections (the
    machine's two cores), then VACUUM ANALYZE each day's partitions and CHECKPOINT, as autovacuum and
    the checkpointer will have done for days this old, and ANALYZE the parents. Returns the seconds the
    insert, vacuum and analyze steps took."""
    keys = max(1, per_day // EVENTS_PER_KEY)
    conns = [await asyncpg.connect(url) for _ in range(2)]
    try:
        await partitions.ensure(conns[0], start=min(days), days=(partitions.today() - min(days)).days + 1)
        seqs = [await conns[0].fetchval("SELECT pg_get_serial_sequence($1, 'id')", t) for t in ("queue", "attempts")]
        for c in conns:
            await c.execute("SET synchronous_commit = off")
        todo = {d: i * keys for i, d in enumerate(sorted(days))}  # each day its own messageKeys

        async def worker(conn: asyncpg.Connection, mine: list[date], step: str) -> None:
            for d in mine:
                if step == "insert":
                    await conn.execute(STORE_DAY, account_id, callback_id, day_start(d), per_day, keys, todo[d],
                                       *seqs, timeout=None)  # fmt: skip
                else:
                    names = ", ".join(partitions.Partition(t, d).name for t in HISTORY_TABLES)
                    await conn.execute(f"VACUUM (FREEZE, ANALYZE) {names}", timeout=None)

        taken: dict[str, float] = {}
        ordered = sorted(days)
        for step in ("insert", "vacuum"):
            t0 = time.monotonic()
            await asyncio.gather(*(worker(c, ordered[i::2], step) for i, c in enumerate(conns)))
            taken[step] = time.monotonic() - t0
        t0 = time.monotonic()
        await conns[0].execute("ANALYZE events, deliveries, attempts", timeout=None)
        taken["analyze"] = time.monotonic() - t0
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):  # old days are on disk by now
            await conns[0].execute("CHECKPOINT", timeout=None)
        t0 = time.monotonic()
        await _autovacuum_idle(conns[0])
        taken["autovacuum"] = time.monotonic() - t0
        return taken
    finally:
        for c in conns:
            await c.close()


async def _autovacuum_idle(conn: asyncpg.Connection, *, quiet: float = 65.0, limit: float = 600.0) -> None:
    """Wait until no autovacuum worker has run in this database for `quiet` seconds (more than the
    launcher's one-minute nap between visits to a database). Days stored in
    bulk still get autovacuum's passes (visibility map, freezing, statistics) even after the VACUUM
    above; history that accumulated over 30 days had them as it went, not while it is measured."""
    t0 = last_busy = time.monotonic()
    while time.monotonic() - last_busy < quiet and time.monotonic() - t0 < limit:
        if await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker' AND datname = current_database()"
        ):
            last_busy = time.monotonic()
        await asyncio.sleep(0.5)


async def bench_ids(env: Env, hook: workload.Callback) -> tuple[int, int]:
    conn = await env.pg.connect()
    try:
        account_id = await conn.fetchval("SELECT id FROM accounts WHERE name = 'default'")
    finally:
        await conn.close()
    return account_id, int(hook.id.removeprefix("cb_"))


# --- the scenario -----------------------------------------------------------------------------


async def _ingest_rate(env: Env, hook: workload.Callback, n: int, prefix: str) -> float:
    """As `ingest`: batches of 100 from 8 clients, fanned out to a disabled callback; its queue rows are
    removed afterwards, so every round starts with the same queue."""
    items = [event(i, prefix, "sent") for i in range(n)]
    async with env.profile(f"ingest {prefix}"):
        t0 = time.monotonic()
        await post_events(env.api, items, batch=100, clients=8)
        seconds = time.monotonic() - t0
    conn = await env.pg.connect()
    try:
        queued = await conn.execute("DELETE FROM queue WHERE callback_id = $1", int(hook.id.removeprefix("cb_")))
    finally:
        await conn.close()
    assert queued == f"DELETE {n}", f"expected {n} fan-out rows, {queued}"
    return n / seconds


async def _phase(
    env: Env, ingest_hook: workload.Callback, hook: workload.Callback, n: int, name: str
) -> dict[str, float]:
    """ROUNDS ingest rounds, then ROUNDS deliver rounds, each after one that does not count (the service's
    connections plan their statements again after the catalog changed); the median of each."""
    await _ingest_rate(env, ingest_hook, n // 5, f"{name}w")
    items = [event(i, f"{name}dw", "delivered") for i in range(DELIVER_EVENTS)]
    await deliver_round(env.api, env.receiver, [hook], items)
    ingest, deliver = [], []
    for r in range(ROUNDS):
        ingest.append(await _ingest_rate(env, ingest_hook, n, f"{name}{r}"))
    for r in range(ROUNDS):
        items = [event(i, f"{name}d{r}", "delivered") for i in range(DELIVER_EVENTS)]
        rnd = await deliver_round(env.api, env.receiver, [hook], items, measured=lambda: env.profile("deliver"))
        deliver.append(rnd.rate)
    log(f"{name}: ingest {', '.join(f'{x:,.0f}' for x in ingest)} events/s;"
        f" deliver {', '.join(f'{x:,.0f}' for x in deliver)} webhooks/s")  # fmt: skip
    return {"ingest": statistics.median(ingest), "deliver": statistics.median(deliver)}


async def _timeline(env: Env, keys: int) -> list[float]:
    """GET /v1/messages/{key} for TIMELINE_KEYS random stored keys, one at a time; milliseconds each."""
    rng = random.Random(21)
    for k in rng.sample(range(keys), 100):  # warm up: connections, prepared statements
        await env.api.call("GET", f"/v1/messages/hist-{k}")
    timings = []
    async with env.profile("timeline"):
        for k in rng.sample(range(keys), TIMELINE_KEYS):
            t0 = time.monotonic()
            body = await env.api.call("GET", f"/v1/messages/hist-{k}")
            timings.append((time.monotonic() - t0) * 1000)
            assert len(body["events"]) >= EVENTS_PER_KEY - 1, body
    return timings


async def _roll_up(env: Env) -> tuple[int, float]:
    """Roll up the stored history as the retention rounds would (a day a round, until caught up); the
    rounds that counted slots and the seconds they took. The service's first round ran before the
    history was stored, so its rollups began with today's slots; a history accumulated over 30 days has
    had them all along, so they start again here, as on a first run over that history."""
    conn = await env.pg.connect()
    try:
        await conn.execute("DELETE FROM activity_rolled; DELETE FROM activity_rollups")
        rounds, t0 = 0, time.monotonic()
        while await activity.roll_up(conn, datetime.now(UTC)):
            rounds += 1
        return rounds, time.monotonic() - t0
    finally:
        await conn.close()


async def _overview(env: Env, account_id: int) -> dict[str, list[float]]:
    """The console overview's reads for each window ending now, one at a time on one connection, as
    dispatcher/activity.py makes them (a rolled-up window: rollups, then the raw tail, in one
    snapshot); milliseconds each, by "<chart> <window>". For comparison, the raw query of each rolled-up
    window's whole span, as "<query> <window> raw"."""
    sql = queries("activity")
    pool = await asyncpg.create_pool(env.pg.url, min_size=1, max_size=1)
    timings: dict[str, list[float]] = {}

    async def timed(label: str, call: Callable[[], Awaitable[object]]) -> None:
        runs = timings.setdefault(label, [])
        for r in range(OVERVIEW_RUNS + 3):
            t0 = time.monotonic()
            await call()
            if r >= 3:
                runs.append((time.monotonic() - t0) * 1000)

    try:
        await timed("callback_backlog", lambda: pool.fetch(sql["callback_backlog"], account_id, activity.BACKLOG_CAP))
        for name, window in activity.WINDOWS.items():
            now = datetime.now(UTC)
            for chart in (activity.events_chart, activity.deliveries_chart):
                await timed(f"{chart.__name__} {name}", functools.partial(chart, pool, account_id, window, now))
        for name, window in activity.WINDOWS.items():
            if window.rolled_up:
                start, end = window.bounds(datetime.now(UTC))
                for query in ("events_per_bucket", "attempts_per_bucket"):
                    args = (account_id, start, end, window.bucket)
                    await timed(f"{query} {name} raw", functools.partial(pool.fetch, sql[query], *args, timeout=None))
    finally:
        await pool.close()
    return timings


async def history(env: Env) -> Result:
    n = env.args.events or 50000
    total = env.args.history
    ingest_hook = await register_callback(env.api, env.receiver, "ingest", event_types=["sent"])
    await workload.set_status(env.api, [ingest_hook], "disabled")  # fan-out rows written, nothing sent
    hook = await register_callback(env.api, env.receiver, "hook", event_types=["delivered"])
    log(f"empty database: {ROUNDS} ingest rounds of {n} events, {ROUNDS} deliver rounds of {DELIVER_EVENTS}")
    empty = await _phase(env, ingest_hook, hook, n, "empty")

    today = partitions.today()
    days = [today - timedelta(days=d) for d in range(DAYS, 0, -1)]
    per_day = total // DAYS
    log(f"storing {per_day * DAYS:,} events with a delivery and an attempt each over {DAYS} days")
    taken = await store_days(env.pg.url, *await bench_ids(env, hook), days, per_day)
    log(
        f"stored in {taken['insert']:,.0f} s, vacuumed in {taken['vacuum']:,.0f} s, analysed in {taken['analyze']:,.0f} s,"
        f" autovacuum done {taken['autovacuum']:,.0f} s later"
    )

    full = await _phase(env, ingest_hook, hook, n, "full")
    log(f"timeline: GET /v1/messages/{{key}} for {TIMELINE_KEYS} random stored keys, one at a time")
    lat = await _timeline(env, per_day // EVENTS_PER_KEY * DAYS)

    rounds, seconds = await _roll_up(env)
    log(f"rolled up the charts' slots in {rounds} retention rounds, {seconds:.1f} s")
    log(f"overview: each console overview read {OVERVIEW_RUNS} times per window, one at a time")
    overview = await _overview(env, (await bench_ids(env, hook))[0])
    for label, runs in overview.items():
        log(f"overview {label}: p50 {percentile(runs, 50):.1f} ms, p99 {percentile(runs, 99):.1f} ms")

    ingest_ratio, deliver_ratio = full["ingest"] / empty["ingest"], full["deliver"] / empty["deliver"]
    result = Result("history", per_day * DAYS, full["ingest"], "events/s", empty["ingest"])
    result.p50_ms, result.p99_ms = percentile(lat, 50), percentile(lat, 99)
    result.target = "ingest and deliver ratios >= 0.9 of the empty database, timeline p99 < 10 ms"
    result.met = ingest_ratio >= 0.9 and deliver_ratio >= 0.9 and result.p99_ms < 10
    result.details = {
        "ingest_ratio": ingest_ratio,
        "deliver_rate": full["deliver"],
        "deliver_empty_rate": empty["deliver"],
        "deliver_ratio": deliver_ratio,
        "store_s": taken["insert"],
        "vacuum_s": taken["vacuum"],
        "analyze_s": taken["analyze"],
        "autovacuum_wait_s": taken["autovacuum"],
        "timeline_max_ms": max(lat),
        "rollup_rounds": rounds,
        "rollup_s": seconds,
    }
    for label, runs in overview.items():  # the target: each under 100 ms (not part of `met`)
        key = "overview_" + label.replace(" ", "_")
        result.details[key + "_p50_ms"], result.details[key + "_p99_ms"] = percentile(runs, 50), percentile(runs, 99)
    return result
