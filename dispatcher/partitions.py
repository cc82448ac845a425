"""History's day partitions (UTC): created ahead of need, dropped whole by retention.

events, deliveries, attempts and source_receipts are range-partitioned by a timestamp (schema.sql).
Each gets one partition per day, named `<table>_YYYYMMDD`. `ensure` creates the missing ones from
today (or a given day) on, under the migration lock, so processes starting together create each
once; `serve` calls it at start and with every retention round, so today and the next
`AHEAD` days always exist. `drop` takes a day out with DETACH ... CONCURRENTLY, which neither waits
for nor blocks the inserts of other days, and then drops it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

import asyncpg

from dispatcher.db import MIGRATION_LOCK, queries

SQL = queries("partitions")
TABLES = ("events", "deliveries", "attempts", "source_receipts")
AHEAD = 3  # days after today that exist already
DAYS_LOCK = 0x64617973  # "days": dropping days (exclusive) against requeueing old deliveries (shared)
_NAME = re.compile(r"^(events|deliveries|attempts|source_receipts)_(\d{8})$")


class Partition(NamedTuple):
    table: str
    day: date

    @property
    def name(self) -> str:
        return f"{self.table}_{self.day:%Y%m%d}"

    @property
    def end(self) -> datetime:
        """The first instant after this day (UTC)."""
        return datetime.combine(self.day + timedelta(days=1), datetime.min.time(), UTC)


def today() -> date:
    return datetime.now(UTC).date()


def _parse(name: str) -> Partition | None:
    m = _NAME.match(name)
    return Partition(m[1], datetime.strptime(m[2], "%Y%m%d").date()) if m else None


async def existing(conn: asyncpg.Connection, tables: Iterable[str] = TABLES) -> list[Partition]:
    """The day partitions that exist, oldest first."""
    rows = await conn.fetch(SQL["existing"], list(tables))
    return sorted(p for r in rows if (p := _parse(r["partition"])) is not None and p.table == r["parent"])


async def ensure(conn: asyncpg.Connection, *, start: date | None = None, days: int = AHEAD + 1) -> list[str]:
    """Create the partitions of `days` days from `start` (today) that do not exist; returns their names.
    A day that exists in every table costs one catalog query and takes no lock."""
    first = start or today()
    wanted = {Partition(t, first + timedelta(days=n)) for t in TABLES for n in range(days)}
    if not wanted - set(await existing(conn)):
        return []
    made = []
    async with conn.transaction():
        await conn.execute(SQL["lock"], MIGRATION_LOCK)
        for p in sorted(wanted - set(await existing(conn))):
            if await conn.fetchval(SQL["create"], p.table, p.day):
                made.append(p.name)
    return made


async def expired(conn: asyncpg.Connection, *, before: datetime) -> list[Partition]:
    """The partitions that may go: their day ended by `before`, and for events, deliveries and receipts,
    no delivery of an event of that day (or an earlier one) is still in the queue."""
    oldest_queued: datetime | None = await conn.fetchval(SQL["oldest_queued"])
    keep_from = min(before, oldest_queued) if oldest_queued else before
    return [p for p in await existing(conn) if p.end <= (before if p.table == "attempts" else keep_from)]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def drop(conn: asyncpg.Connection, partitions: Iterable[Partition]) -> list[str]:
    """Detach (concurrently) and drop these partitions; returns their names. Not in a transaction block.
    A detach left pending by a crash is finished first."""
    for r in await conn.fetch(SQL["detach_pending"]):
        table, partition = _ident(r["parent"]), _ident(r["partition"])
        await conn.execute(SQL["finalize"].format(table=table, partition=partition))
        await conn.execute(SQL["drop"].format(partition=partition))
    parts = list(partitions)
    for p in parts:
        await conn.execute(SQL["detach"].format(table=_ident(p.table), partition=_ident(p.name)))
    if parts:  # one statement: one commit, and one pass over shared buffers for all of them
        await conn.execute(SQL["drop"].format(partition=", ".join(_ident(p.name) for p in parts)))
    return [p.name for p in parts]


async def hold(conn: asyncpg.Connection) -> None:
    """Keep every day from being dropped until the current transaction ends."""
    await conn.execute(SQL["hold_days"], DAYS_LOCK)


async def drop_expired(conn: asyncpg.Connection, *, before: datetime) -> list[str] | None:
    """Drop the days `expired` names; None when another process is dropping days or a transaction
    holds them (the next round tries again). Not in a transaction block."""
    if not await conn.fetchval(SQL["try_lock_days"], DAYS_LOCK):
        return None
    try:
        return await drop(conn, await expired(conn, before=before))
    finally:
        await conn.fetchval(SQL["unlock_days"], DAYS_LOCK)
