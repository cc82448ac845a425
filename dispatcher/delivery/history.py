"""Delivery history and recovery: what was sent where, every attempt, and re-queueing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from dispatcher import ids
from dispatcher.db import queries
from dispatcher.delivery import queue
from dispatcher.errors import NotFound

SQL = queries("deliveries")


# A delivery as the API shows it: the response schema and, through delivery_json, every answer.
class DeliveryOut(BaseModel):
    deliveryId: str
    eventId: str
    callbackId: str
    eventType: str
    messageKey: str
    status: str
    attemptCount: int
    nextAttemptAt: str | None
    lastAttemptAt: str | None
    lastStatusCode: int | None
    lastError: str | None
    createdAt: str


# One request in a callback's attempt log; attempt_json builds it.
class CallbackAttemptOut(BaseModel):
    attemptId: str
    startedAt: str
    durationMs: float
    statusCode: int | None
    errorKind: str | None
    responseBody: str | None
    webhookId: str | None = Field(description="The webhook-id header of the request (a batch's is shared)")
    events: int = Field(description="Events the request carried: 1, or the batch's size")


class AttemptOut(CallbackAttemptOut):
    """One request in a delivery's history, with its number among that delivery's attempts."""

    number: int = Field(
        description="The n-th request that carried this delivery, from 1 (a request sent after its lease was lost counts here, not in attemptCount)"
    )


def delivery_json(row: asyncpg.Record) -> dict[str, Any]:
    pending = row["status"] == "pending"
    return DeliveryOut(
        deliveryId=ids.encode("dlv", row["id"]),
        eventId=ids.encode("evt", row["event_id"]),
        callbackId=ids.encode("cb", row["callback_id"]),
        eventType=row["type"],
        messageKey=row["message_key"],
        status=row["status"],
        attemptCount=row["attempts"],
        nextAttemptAt=row["next_attempt_at"].isoformat() if pending else None,
        lastAttemptAt=row["last_attempt_at"].isoformat() if row["last_attempt_at"] else None,
        lastStatusCode=row["last_status_code"],
        lastError=row["last_error"],
        createdAt=row["created_at"].isoformat(),
    ).model_dump()


def attempt_json(row: asyncpg.Record) -> dict[str, Any]:
    """One request; in a delivery's history (a row with its number) an AttemptOut."""
    fields: dict[str, Any] = dict(
        attemptId=ids.encode("att", row["id"]),
        startedAt=row["started_at"].isoformat(),
        durationMs=round(row["duration_ms"], 2),
        statusCode=row["status_code"],
        errorKind=row["error_kind"],
        responseBody=row["response_body"],
        webhookId=row["webhook_id"],
        events=row["events"],
    )
    if "number" in row:
        return AttemptOut(number=row["number"], **fields).model_dump()
    return CallbackAttemptOut(**fields).model_dump()


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
    await queue.notify(conn)


async def recover(
    conn: asyncpg.Connection, account_id: int, callback_id: int, since: datetime, until: datetime | None
) -> int:
    status = await conn.execute(SQL["recover"], callback_id, account_id, since, until)
    count = int(status.split()[-1])
    if count:
        await queue.notify(conn)
    return count


async def account_of(conn: asyncpg.Connection, delivery_id: str) -> int:
    account_id = await conn.fetchval(SQL["delivery_account"], ids.decode("dlv", delivery_id, "delivery"))
    if account_id is None:
        raise NotFound("no such delivery")
    return int(account_id)
