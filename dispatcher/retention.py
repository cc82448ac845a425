"""Retention: history (events, their deliveries and provider receipts, the attempt log) goes a whole day
at a time, by dropping its partitions (dispatcher/partitions.py), never a day with an event still being
delivered; finished messages, stored bodies and expired source nonces are deleted in bounded batches,
so the purge never holds long locks on hot tables. Each round also creates the days ahead and rolls up
the console charts' complete slots (activity.roll_up). One process purges at a time (an advisory lock)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from dispatcher import activity, partitions, sessions
from dispatcher.db import Database, queries
from dispatcher.logs import get_logger
from dispatcher.loop import BackgroundLoop
from dispatcher.settings import Settings

log = get_logger("dispatcher.retention")
SQL = queries("retention")
DAY = 86400.0
_LOCK = 0x70757267  # "purg"


class Purger:
    def __init__(self, database: Database, settings: Settings):
        self.db, self.settings = database, settings
        self._loop = BackgroundLoop("retention", database, self._step, on_failure=lambda _: settings.purge_interval)

    def plan(self) -> list[tuple[str, float]]:
        s = self.settings
        steps = [("purge_nonces", 2 * s.source_tolerance)]
        if s.retention_days is not None:
            steps.append(("purge_messages", s.retention_days * DAY))
            steps.append(("purge_rollups", s.retention_days * DAY))
        if s.message_body_retention_days is not None:
            steps.append(("purge_bodies", s.message_body_retention_days * DAY))
        return steps

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _step(self) -> float:
        await self.purge()  # a failure is retried next interval
        return self.settings.purge_interval

    async def purge(self) -> dict[str, int]:
        """Create the days ahead, drop the days past retention, roll up the charts' complete slots, then
        run every batch step until a batch comes back short; returns rows affected per step (and
        `partitions` dropped, `rollup_slots` counted)."""
        done: dict[str, int] = {}
        now = datetime.now(UTC)
        cutoff = None if self.settings.retention_days is None else now - timedelta(days=self.settings.retention_days)
        async with self.db.pool.acquire() as conn:
            await partitions.ensure(conn)
            if cutoff is not None:
                dropped = await partitions.drop_expired(conn, before=cutoff)
                done["partitions"] = len(dropped or [])
            done["sessions"] = await sessions.purge(conn, timedelta(seconds=self.settings.console_idle_timeout))
            async with conn.transaction():
                if not await conn.fetchval(SQL["try_lock"], _LOCK):
                    return done  # another process is purging
                # an attempt is logged after its request ended: a long webhook timeout delays the slots
                lag = timedelta(seconds=2 * self.settings.webhook_timeout + 60)
                done["rollup_slots"] = await activity.roll_up(conn, now, horizon=cutoff, lag=lag)
        for name, age in self.plan():
            total = 0
            while not self._loop.stopping:
                async with self.db.pool.acquire() as conn, conn.transaction():
                    if not await conn.fetchval(SQL["try_lock"], _LOCK):
                        return done  # another process is purging
                    status = await conn.execute(SQL[name], age, self.settings.purge_batch)
                count = int(status.split()[-1])
                total += count
                if count < self.settings.purge_batch:
                    break
                await asyncio.sleep(0.05)  # let the hot path breathe between batches
            done[name] = total
        if any(done.values()):
            log.info("purged", **done)
        return done
