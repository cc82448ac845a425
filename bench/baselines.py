"""Raw baselines: the same physical work as the service, without the service.

raw_deliver: an aiohttp client POSTing signed webhook bodies to the same receiver, 50 in flight.
raw_ingest:  one asyncpg connection inserting the same events (and their queue rows) with unnest,
             100 per transaction, into the real tables under a scratch account.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import orjson

from bench.receiver import Receiver
from bench.workload import new_secret, sign_headers


@dataclass
class Job:
    """One raw webhook request: hook name, receiver port index, webhook-id, payload (one event or a list)."""

    name: str
    port: int
    msg_id: str
    payload: Any

    @property
    def events(self) -> int:
        return len(self.payload) if isinstance(self.payload, list) else 1


async def raw_deliver(receiver: Receiver, jobs: list[Job], *, concurrency: int = 50, timeout: float = 300) -> float:
    """POST every job (serialise, sign, send, read the answer); returns seconds from start to last arrival."""
    names = sorted({j.name for j in jobs})
    secrets = {n: new_secret() for n in names}
    for n in names:
        await receiver.set_secret(n, secrets[n])
    await receiver.reset()
    urls = {(j.name, j.port): receiver.url(j.name, j.port) for j in jobs}
    total = sum(j.events for j in jobs)
    it = iter(jobs)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:

        async def loop() -> None:
            for job in it:
                body = orjson.dumps(job.payload)
                headers = sign_headers(secrets[job.name], job.msg_id, body)
                async with session.post(urls[job.name, job.port], data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"receiver answered {r.status}")

        t0 = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
    _, last = await receiver.wait_events(names, total, timeout=timeout)
    return last - t0


INSERT_EVENTS = """
INSERT INTO events (account_id, client_id, type, message_key, definition_key, recipient, occurred_at, data)
SELECT $1, t.client_id, t.type, t.message_key, t.definition_key, t.recipient, t.occurred_at, t.data::jsonb
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::text[])
     AS t(client_id, type, message_key, definition_key, recipient, occurred_at, data)
RETURNING id, recorded_at
"""
INSERT_DELIVERIES = """
INSERT INTO queue (account_id, event_id, callback_id, created_at)
SELECT $1, t.id, $3, t.recorded_at FROM unnest($2::bigint[], $4::timestamptz[]) AS t(id, recorded_at)
"""


async def scratch_account(conn: asyncpg.Connection, name: str = "bench-baseline") -> tuple[int, int]:
    """An account with one disabled callback (its delivery rows are never claimed)."""
    account_id = await conn.fetchval("INSERT INTO accounts (name) VALUES ($1) RETURNING id", name)
    callback_id = await conn.fetchval(
        "INSERT INTO callbacks (account_id, name, url, status) VALUES ($1, 'scratch', 'http://127.0.0.1:1/', "
        "'disabled') RETURNING id",
        account_id,
    )
    return account_id, callback_id


async def raw_ingest(url: str, items: list[dict[str, Any]], *, batch: int = 100) -> float:
    """Insert the events and one delivery row each, `batch` per transaction, on one connection."""
    conn = await asyncpg.connect(url)
    try:
        account_id, callback_id = await scratch_account(conn)
        t0 = time.monotonic()
        for i in range(0, len(items), batch):
            chunk = items[i : i + batch]
            now = datetime.now(UTC)
            async with conn.transaction():
                rows = await conn.fetch(
                    INSERT_EVENTS,
                    account_id,
                    [e.get("id") for e in chunk],
                    [e["type"] for e in chunk],
                    [e["messageKey"] for e in chunk],
                    [e.get("definitionKey") for e in chunk],
                    [e.get("recipient") for e in chunk],
                    [now] * len(chunk),
                    [orjson.dumps(e.get("data") or {}).decode() for e in chunk],
                )
                await conn.execute(
                    INSERT_DELIVERIES,
                    account_id,
                    [r["id"] for r in rows],
                    callback_id,
                    [r["recorded_at"] for r in rows],
                )
        return time.monotonic() - t0
    finally:
        await conn.close()
