"""An account's activity as the console shows it: events and deliveries per minute over a window, the
backlog and the callbacks in trouble (the overview), and what is new after a cursor (the live view).

Every read is scoped by account and bounded in time on the history tables' partition keys, so only the
window's days are read (tests/integration/test_activity_plans.py). The 24-hour and 7-day charts would
still read hundreds of thousands of rows of a busy account: they read the counts of complete 10-minute
slots from activity_rollups, which the retention round fills (`roll_up`), and only the slots after
those raw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

import asyncpg

from dispatcher import partitions
from dispatcher.db import queries

SQL = queries("activity")
BACKLOG_CAP = 100_000  # queued deliveries counted per callback; more shows as "100,000+"
TOP_TYPES = 6  # event types drawn as their own series; the rest are "other"
SLOT = timedelta(minutes=10)  # what a rollup row counts; a rolled-up window's buckets are whole slots
# Rows are stamped before they are visible: an event's recorded_at is its transaction's start, an
# attempt is logged when its request has ended (within the webhook timeout, 10 s by default) and its
# outcome batch is written. A slot is rolled up once it ended this long ago, so none of its rows is
# still to come; rows of the slots after it are read raw until then.
ROLLUP_LAG = timedelta(minutes=5)
ROLLUP_ROUND = timedelta(days=1)  # most history one round rolls up (the first starts up to 7 days back)


@dataclass(frozen=True)
class Window:
    name: str
    label: str
    span: timedelta
    bucket_minutes: int
    rolled_up: bool = False  # read from activity_rollups up to where they reach (buckets of whole slots)

    @property
    def bucket(self) -> timedelta:
        return timedelta(minutes=self.bucket_minutes)

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """[start, end): `end` is the end of the bucket holding `now`, so the last bucket is the current one."""
        size = self.bucket_minutes * 60
        end = datetime.fromtimestamp((int(now.timestamp()) // size + 1) * size, UTC)
        return end - self.span, end


WINDOWS = {
    w.name: w
    for w in (
        Window("1h", "1 hour", timedelta(hours=1), 1),
        Window("6h", "6 hours", timedelta(hours=6), 1),
        Window("24h", "24 hours", timedelta(hours=24), 10, rolled_up=True),
        Window("7d", "7 days", timedelta(days=7), 60, rolled_up=True),
    )
}
DEFAULT_WINDOW = WINDOWS["1h"]


@dataclass
class Series:
    """Per-minute rates (count / minutes per bucket) of one line, bucket by bucket."""

    name: str
    counts: list[int]
    minutes: int

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def rates(self) -> list[float]:
        return [n / self.minutes for n in self.counts]


@dataclass
class Chart:
    buckets: list[datetime]  # each bucket's start
    minutes: int  # per bucket
    series: list[Series] = field(default_factory=list)

    @property
    def peak(self) -> float:
        return max((r for s in self.series for r in s.rates), default=0.0)


def _buckets(start: datetime, window: Window) -> list[datetime]:
    return [start + window.bucket * i for i in range(int(window.span / window.bucket))]


async def _rows(
    pool: asyncpg.Pool, account_id: int, window: Window, now: datetime, raw: str, rolled: str
) -> list[tuple[int, asyncpg.Record]]:
    """A chart's rows, each with its bucket's index. A rolled-up window reads the slots the rollups hold
    from them and any others raw (in slots, binned here): after the rollups' end, a few minutes; before
    their start, nothing unless they started after the window."""
    start, end = window.bounds(now)
    if not window.rolled_up:
        rows = await pool.fetch(SQL[raw], account_id, start, end, window.bucket)
        return [((r["bucket"] - start) // window.bucket, r) for r in rows]
    # One snapshot: a rollup committing between the reads would count its slots twice.
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        held = await conn.fetchrow(SQL["rolled_up_slots"])
        since, upto = (held["since"], held["upto"]) if held else (start, start)
        since, upto = (min(max(t, start), end) for t in (since, upto))
        rows = await conn.fetch(SQL[raw], account_id, start, since, SLOT) if start < since else []
        rows += await conn.fetch(SQL[rolled], account_id, since, upto, window.bucket)
        rows += await conn.fetch(SQL[raw], account_id, upto, end, SLOT)
    return [((r["bucket"] - start) // window.bucket, r) for r in rows]


async def events_chart(pool: asyncpg.Pool, account_id: int, window: Window, now: datetime) -> Chart:
    """Events per minute by type: the TOP_TYPES busiest types, the others together as "other"."""
    rows = await _rows(pool, account_id, window, now, "events_per_bucket", "events_rolled_up")
    buckets = _buckets(window.bounds(now)[0], window)
    totals: dict[str, int] = {}
    for _, r in rows:
        totals[r["type"]] = totals.get(r["type"], 0) + r["n"]
    top = sorted(totals, key=lambda t: (-totals[t], t))[:TOP_TYPES]
    names = top + (["other"] if len(totals) > len(top) else [])
    counts = {name: [0] * len(buckets) for name in names}
    for i, r in rows:
        counts[r["type"] if r["type"] in top else "other"][i] += r["n"]
    return Chart(buckets, window.bucket_minutes, [Series(n, counts[n], window.bucket_minutes) for n in names])


async def deliveries_chart(pool: asyncpg.Pool, account_id: int, window: Window, now: datetime) -> Chart:
    """Deliveries per minute, succeeded and failed (each request counts the deliveries it carried; a
    failed one is retried later, or was the last try)."""
    rows = await _rows(pool, account_id, window, now, "attempts_per_bucket", "attempts_rolled_up")
    buckets = _buckets(window.bounds(now)[0], window)
    succeeded, failed = [0] * len(buckets), [0] * len(buckets)
    for i, r in rows:
        succeeded[i] += r["succeeded"]
        failed[i] += r["failed"]
    series = [Series("succeeded", succeeded, window.bucket_minutes), Series("failed", failed, window.bucket_minutes)]
    return Chart(buckets, window.bucket_minutes, series)


def _slot_floor(at: datetime) -> datetime:
    size = int(SLOT.total_seconds())
    return datetime.fromtimestamp(int(at.timestamp()) // size * size, UTC)


async def roll_up(
    conn: asyncpg.Connection, now: datetime, *, horizon: datetime | None = None, lag: timedelta = ROLLUP_LAG
) -> int:
    """Count the complete slots after the rollups' end, up to `lag` (at least ROLLUP_LAG) before `now` and at most
    ROLLUP_ROUND of them, into activity_rollups; returns how many slots (0: none complete yet). The first run starts at the oldest day of history, but no earlier than `horizon` (the
    retention's) or the longest rolled-up window. Idempotent: a slot counted again gets the same counts.
    One process at a time (the caller's lock)."""
    held = await conn.fetchrow(SQL["rolled_up_slots"])
    if held:
        first, since = held["since"], held["upto"]
    else:
        days = await partitions.existing(conn, ("events", "attempts"))
        oldest = datetime.combine(days[0].day, time(), UTC) if days else now
        longest = max(w.span for w in WINDOWS.values() if w.rolled_up)
        first = since = _slot_floor(max(oldest, now - longest, horizon or oldest))
    until = min(_slot_floor(now - max(lag, ROLLUP_LAG)), since + ROLLUP_ROUND)
    if until <= since:
        return 0
    async with conn.transaction():
        await conn.execute(SQL["roll_up_events"], since, until, SLOT)
        await conn.execute(SQL["roll_up_attempts"], since, until, SLOT)
        await conn.execute(SQL["rolled_up"], first, until)
    return (until - since) // SLOT


@dataclass(frozen=True)
class Backlog:
    queued: int
    due: int
    capped: bool  # some callback has more than BACKLOG_CAP queued: the figures are lower bounds
    oldest_due: datetime | None
    troubled: list[dict[str, Any]]  # failing and disabled callbacks, with their own backlog

    def oldest_age(self, now: datetime) -> timedelta | None:
        return max(now - self.oldest_due, timedelta(0)) if self.oldest_due else None


async def backlog(pool: asyncpg.Pool, account_id: int) -> Backlog:
    rows = [dict(r) for r in await pool.fetch(SQL["callback_backlog"], account_id, BACKLOG_CAP)]
    oldest = [r["oldest_due"] for r in rows if r["oldest_due"] is not None]
    return Backlog(
        queued=sum(r["queued"] for r in rows),
        due=sum(r["due"] for r in rows),
        capped=any(r["queued"] >= BACKLOG_CAP for r in rows),
        oldest_due=min(oldest, default=None),
        troubled=[r for r in rows if r["status"] in ("failing", "disabled")],
    )


# The live view: what is new after a cursor, "e<event id>a<attempt id>".
_CURSOR = re.compile(r"^e(\d{1,18})a(\d{1,18})$")


@dataclass
class Cursor:
    event_id: int
    attempt_id: int

    def __str__(self) -> str:
        return f"e{self.event_id}a{self.attempt_id}"

    @classmethod
    def parse(cls, text: str | None) -> Cursor | None:
        m = _CURSOR.match(text or "")
        return cls(int(m[1]), int(m[2])) if m else None


async def live_cursor(pool: asyncpg.Pool, account_id: int) -> Cursor:
    row = await pool.fetchrow(SQL["live_cursor"], account_id)
    return Cursor(row["event_id"], row["attempt_id"])


async def recent_events(pool: asyncpg.Pool, account_id: int, limit: int) -> list[asyncpg.Record]:
    return await pool.fetch(SQL["recent_events"], account_id, limit)


async def events_after(pool: asyncpg.Pool, account_id: int, after: int, limit: int) -> list[asyncpg.Record]:
    return await pool.fetch(SQL["events_after"], account_id, after, limit)


async def recent_attempts(
    pool: asyncpg.Pool, account_id: int, callback_ids: list[int] | None, limit: int
) -> list[asyncpg.Record]:
    return await pool.fetch(SQL["recent_attempts"], account_id, callback_ids, limit)


async def attempts_after(
    pool: asyncpg.Pool, account_id: int, callback_ids: list[int] | None, after: int, limit: int
) -> list[asyncpg.Record]:
    return await pool.fetch(SQL["attempts_after"], account_id, callback_ids, after, limit)
