"""Whether the database answers, and since when it has not; the embedded server brought back.

Every `serve` process runs one watch. It probes PostgreSQL once a second (five times a second during
an outage) on a connection of its own
(a full pool under load is not an outage), and remembers when the current outage began, which
`/healthz` compares with DISPATCHER_HEALTH_DB_GRACE. A process holding the embedded server also
checks its postmaster on every tick and, when it is gone (killed, crashed), starts it again:
PostgreSQL replays its write-ahead log, so every committed transaction is kept. The pools need no
help: their broken connections fail, are discarded, and are replaced by new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg

from dispatcher import db
from dispatcher.logs import get_logger

log = get_logger(__name__)
INTERVAL = 1.0  # seconds between probes
PROBE_TIMEOUT = 2.0


class DatabaseWatch:
    def __init__(self, database: db.Database, *, interval: float = INTERVAL):
        self.db, self.interval = database, interval
        self.unreachable_since: float | None = None  # time.monotonic() of the first failed probe
        self._conn: asyncpg.Connection | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def unreachable_for(self) -> float:
        """Seconds since the database last stopped answering; 0 while it answers."""
        return 0.0 if self.unreachable_since is None else time.monotonic() - self.unreachable_since

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="database-watch")

    async def stop(self) -> None:
        self._stop.set()
        if self._task:
            await self._task
        await self._disconnect()

    async def _run(self) -> None:
        while not self._stop.is_set():
            if self.db.server is not None:
                await self._revive()
            if await self._probe():
                if self.unreachable_since is not None:
                    log.info("database answers again", after_seconds=round(self.unreachable_for(), 1))
                self.unreachable_since = None
            elif self.unreachable_since is None:
                self.unreachable_since = time.monotonic()
                log.warning("database unreachable")
            # during an outage look five times as often: the server is back the sooner
            wait = self.interval if self.unreachable_since is None else self.interval / 5
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)

    async def _probe(self) -> bool:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self.db.url)
                await db.ping(self._conn)
            return True
        except db.DB_ERRORS:
            await self._disconnect()
            return False

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def _revive(self) -> None:
        server: Any = self.db.server
        if db.postmaster_alive(server):
            return
        try:
            if await asyncio.to_thread(db.revive_embedded, server):
                log.error("the embedded postgres had died; started it again (crash recovery)")
        except Exception as exc:  # e.g. the dead server's backends still hold its shared memory
            log.warning("the embedded postgres is down and cannot start yet; retrying", error=str(exc))
