"""The ownership handshake: POST a callback's verification key to its URL (delivery/verification.py), record
on the callback what happened (`sent` → `delivered` | `failed`), and retry an undelivered one on a short
schedule from whichever process claims it.

The API sends the first request (and a resend) itself, leased to it by `callbacks.start_handshake`; the
retrier, run with the workers, sends the rest:

    loop: claim due handshakes (a lease, commit) → POST each (no transaction open) → record the outcome
          → wait for the poll interval or stop, whichever comes first.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import asyncpg

from dispatcher import callbacks, ids
from dispatcher.crypto import Keyring
from dispatcher.db import Database, queries
from dispatcher.delivery import outbound, policy, queue, verification
from dispatcher.logs import get_logger
from dispatcher.loop import BackgroundLoop
from dispatcher.settings import Settings

log = get_logger("dispatcher.handshake")
SQL = queries("callbacks")
CLAIM_BATCH = 20


def lease(settings: Settings) -> float:
    """Seconds a handshake request is leased to the process sending it: its timeout, and room to record."""
    return settings.verification_timeout + 30.0


@dataclass(frozen=True, slots=True)
class Pending:
    """One handshake request to make: the key it carries, and the attempts made with that key before it."""

    callback_id: int
    url: str
    key: str
    attempts: int

    @property
    def key_hash(self) -> bytes:
        return callbacks.key_hash(self.key)


async def record(
    conn: asyncpg.Pool | asyncpg.Connection, p: Pending, response: outbound.Response, *, retry_in: float | None
) -> asyncpg.Record | None:
    """Write the outcome; None when the callback is gone or a newer key replaced this one."""
    return await conn.fetchrow(
        SQL["record_handshake"], p.callback_id, p.key_hash, "delivered" if response.ok else "failed",
        datetime.fromtimestamp(response.started_at, UTC), response.status, response.error_kind, retry_in,
    )  # fmt: skip


class Handshaker:
    """Makes one handshake request and records its outcome, with the retry that follows a failure."""

    def __init__(self, database: Database, settings: Settings, keyring: Keyring, session: aiohttp.ClientSession):
        self.db, self.settings, self.keyring, self.session = database, settings, keyring, session
        schedule = tuple(settings.verification_retry_schedule)
        self.retry = policy.RetryPolicy(schedule, settings.retry_jitter, settings.retry_after_max)

    async def attempt(self, p: Pending) -> asyncpg.Record | None:
        # The handshake is signed as the callback's standard webhooks are (v1 or v1a, per live key).
        keys = await queue.signing_secrets(self.db.pool, self.keyring, p.callback_id)
        response = await verification.send(
            self.session, keys, callback_id=p.callback_id, url=p.url, key=p.key, allowed=self.settings.allowed_networks
        )
        retry_in = None if response.ok else self.retry.next_delay(p.attempts + 1, response.retry_after)
        row = await record(self.db.pool, p, response, retry_in=retry_in)
        log.info("verification", callback_id=ids.encode("cb", p.callback_id), attempt=p.attempts + 1,
                 status=response.status, error=response.error_kind, retry_in=retry_in)  # fmt: skip
        return row


class HandshakeRetrier:
    """The background service: sends the handshakes that are due again, in any process that runs it."""

    def __init__(self, database: Database, settings: Settings, keyring: Keyring):
        self.db, self.settings, self.keyring = database, settings, keyring
        self._loop = BackgroundLoop(
            "handshake-retrier", database, self._step, on_failure=lambda _: settings.poll_interval
        )

    async def start(self) -> None:
        s = self.settings
        self.session = outbound.make_session(
            allowed=s.allowed_networks, limit=CLAIM_BATCH, timeout=s.verification_timeout
        )
        self.handshaker = Handshaker(self.db, s, self.keyring, self.session)
        self._loop.start()

    async def stop(self) -> None:
        """Requests still in flight after the grace period are dropped: their leases make them due again."""
        await self._loop.stop(self.settings.shutdown_grace)
        await self.session.close()
        await asyncio.sleep(0)  # let the closed connections' transports finish closing on this loop

    async def _step(self) -> float:
        await self.run_once()
        return self.settings.poll_interval

    async def run_once(self) -> int:
        """Claim the due handshakes and make their requests; returns how many were made."""
        rows = await self.db.pool.fetch(SQL["claim_handshakes"], CLAIM_BATCH, lease(self.settings))
        due = [self._pending(r) for r in rows]
        for failed in await asyncio.gather(*map(self.handshaker.attempt, due), return_exceptions=True):
            if isinstance(failed, Exception):  # this one's lease makes it due again
                log.warning("handshake retry failed", error=str(failed) or type(failed).__name__)
        return len(rows)

    def _pending(self, row: asyncpg.Record) -> Pending:
        key = self.keyring.decrypt(row["verification_key_enc"])  # kept while a retry is due
        return Pending(row["id"], row["url"], key, row["verification_attempts"])
