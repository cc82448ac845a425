"""Delivery history and recovery: what was sent where, every attempt, and re-queueing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from dispatcher import events, ids
from dispatcher.db import queries
from dispatcher.errors import NotFound

SQL = queries("deliveries")


def delivery_json(row: asyncpg.Record) -> dict[str, Any]:
    pending = row["status"] == "pending"
    return {
        "deliveryId": ids.encode("dlv", row["id"]),
        "eventId": events.event_id(row["event_id"]),
        "callbackId": ids.encode("cb", row["callback_id"]),
        "eventType": row["type"],
        "messageKey": row["message_key"],
        "status": row["status"],
        "attemptCount": row["attempts"],
        "nextAttemptAt": row["next_attempt_at"].isoformat() if pending else None,
        "lastAttemptAt": row["last_attempt_at"].isoformat() if row["last_attempt_at"] else None,
        "lastStatusCode": row["last_status_code"],
        "lastError": row["last_error"],
        "createdAt": row["created_at"].isoformat(),
    }


def attempt_json(row: asyncpg.Record) -> dict[str, Any]:
    """One request; in a delivery's history also its number among that delivery's attempts."""
    numbered = {"number": row["number"]} if "number" in row else {}
    return {
        "attemptId": ids.encode("att", row["id"]),
        **numbered,
        "startedAt": row["started_at"].isoformat(),
        "durationMs": round(row["duration_ms"], 2),
        "statusCode": row["status_code"],
        "errorKind": row["error_kind"],
        "responseBody": row["response_body"],
        "webhookId": row["webhook_id"],
        "events": row["events"],
    }


async def get_delivery(conn: asyncpg.Connection, account_id: int, delivery_id: str) -> dict[str, Any]:
    row = await conn.fetchrow(SQL["get_delivery"], ids.decode("dlv", delivery_id, "delivery"), account_id)
    if row is None:
        raise NotFound("no such delivery")
    attempts = await conn.fetch(SQL["delivery_attempts"], row["attempt_ids"], account_id)
    return {**delivery_json(row), "attempts": [attempt_json(a) for a in attempts]}


async def list_deliveries(
    conn: asyncpg.Connection, account_id: int, callback_id: int, *, after_id: int, status: str | None,
    since: datetime | None, until: datetime | None, limit: int,
) -> list[asyncpg.Record]:  # fmt: skip
    return await conn.fetch(SQL["list_deliveries"], callback_id, account_id, after_id, status, since, until, limit)


async def callback_attempts(
    conn: asyncpg.Connection, account_id: int, callback_id: int, *, after_id: int, succeeded: bool | None,
    since: datetime | None, until: datetime | None, limit: int,
) -> list[asyncpg.Record]:  # fmt: skip
    return await conn.fetch(SQL["callback_attempts"], callback_id, account_id, after_id, succeeded, since, until, limit)


async def retry(conn: asyncpg.Connection, account_id: int, delivery_id: str) -> None:
    if await conn.fetchval(SQL["retry_delivery"], ids.decode("dlv", delivery_id, "delivery"), account_id) is None:
        raise NotFound("no such delivery")
    await conn.execute(events.SQL["notify_deliveries"])


async def recover(
    conn: asyncpg.Connection, account_id: int, callback_id: int, since: datetime, until: datetime | None
) -> int:
    status = await conn.execute(SQL["recover"], callback_id, account_id, since, until)
    count = int(status.split()[-1])
    if count:
        await conn.execute(events.SQL["notify_deliveries"])
    return count


async def account_of(conn: asyncpg.Connection, delivery_id: str) -> int:
    account_id = await conn.fetchval(SQL["delivery_account"], ids.decode("dlv", delivery_id, "delivery"))
    if account_id is None:
        raise NotFound("no such delivery")
    return int(account_id)
