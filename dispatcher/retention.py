"""Retention: a background purge of old events (with their deliveries, attempts and provider receipts),
attempts, finished messages, stored bodies and expired source nonces, in bounded batches so it never holds long locks on hot tables.
One process purges at a time (a transaction-scoped advisory lock per batch)."""

from __future__ import annotations

import asyncio

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
            steps += [(name, s.retention_days * DAY) for name in ("purge_events", "purge_attempts", "purge_messages")]
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
        """Run every step until a batch comes back short; returns rows affected per step."""
        done: dict[str, int] = {}
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
