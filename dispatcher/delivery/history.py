"""Delivery history and recovery: what was sent where, every attempt, and re-queueing."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from dispatcher import ids, partitions
from dispatcher.crypto import SECRET_PREFIX
from dispatcher.db import queries
from dispatcher.delivery import formats, outbound, queue
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
    test: bool = Field(False, description="A test event the callback's owner sent (POST /v1/callbacks/{id}/test)")


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
        test=bool(row.get("test")),
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


async def delivery_with_attempts(
    conn: asyncpg.Connection, account_id: int, delivery_id: str
) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    """One delivery of the account (queued or finished) and its attempts in order; NotFound otherwise."""
    row = await conn.fetchrow(SQL["get_delivery"], ids.decode("dlv", delivery_id, "delivery"), account_id)
    if row is None:
        raise NotFound("no such delivery")
    attempts = await conn.fetch(SQL["delivery_attempts"], row["attempt_ids"], account_id, row["created_at"])
    return row, attempts


async def get_delivery(conn: asyncpg.Connection, account_id: int, delivery_id: str) -> dict[str, Any]:
    row, attempts = await delivery_with_attempts(conn, account_id, delivery_id)
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
    async with conn.transaction():
        await partitions.hold(conn)  # its event's day stays until the queue row is committed
        if await conn.fetchval(SQL["retry_delivery"], ids.decode("dlv", delivery_id, "delivery"), account_id) is None:
            raise NotFound("no such delivery")
        await queue.notify(conn)


async def recover(
    conn: asyncpg.Connection, account_id: int, callback_id: int, since: datetime, until: datetime | None
) -> int:
    async with conn.transaction():
        await partitions.hold(conn)  # their events' days stay until the queue rows are committed
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


async def event_deliveries(
    conn: asyncpg.Connection, account_id: int, event_rows: Sequence[Mapping[str, Any]]
) -> dict[int, list[asyncpg.Record]]:
    """The deliveries each of these events caused ({event id: deliveries by id}), queued or finished, each
    with its callback's name; only the events' days of history are read."""
    found: dict[int, list[asyncpg.Record]] = {r["id"]: [] for r in event_rows}
    if not found:
        return found
    days = sorted({r["recorded_at"] for r in event_rows})
    for d in await conn.fetch(SQL["event_deliveries"], account_id, list(found), days):
        found[d["event_id"]].append(d)
    return found


async def delivery_event(
    conn: asyncpg.Connection, account_id: int, delivery: Mapping[str, Any]
) -> asyncpg.Record | None:
    """A delivery's event as the worker reads it to build the request, with its callback's format and
    batch size (None when retention dropped the event)."""
    return await conn.fetchrow(
        SQL["delivery_event"], account_id, delivery["event_id"], delivery["created_at"], delivery["id"],
        delivery["callback_id"],
    )  # fmt: skip


# Signatures are not stored (they depend on the secrets live at the time); the shown request has a stand-in.
SIGNATURE_HEADERS = ("webhook-signature", "x-sfmc-ens-signature", "x-cio-signature")
_STAND_IN_SECRET = SECRET_PREFIX + base64.b64encode(bytes(24)).decode()


def request_shown(event: Mapping[str, Any], webhook_id: str | None, started_at: datetime) -> tuple[str, dict[str, str]]:
    """(body, headers) of the request that carried `event` (a delivery_event row) as the worker builds it
    for the callback's format, dated by the attempt; signature headers read "(not stored)". A batch's body
    showed its other events too; this one shows the delivery's own."""
    fmt = event["format"] or "standard"
    batched = (event["max_batch_size"] or 1) > 1
    timestamp = int(started_at.timestamp())
    _, body, headers = formats.request(fmt, [event], batched, [_STAND_IN_SECRET], timestamp, outbound.USER_AGENT)
    for name in SIGNATURE_HEADERS:
        if name in headers:
            headers[name] = "(not stored)"
    if webhook_id and "webhook-id" in headers:
        headers["webhook-id"] = webhook_id
    return body.decode(), headers


# --- a callback's health, for the console ---------------------------------------------------------


async def callback_health(
    conn: asyncpg.Connection, account_id: int, callback_ids: Sequence[int], since: datetime
) -> dict[int, asyncpg.Record]:
    """{callback id: requests, succeeded (2xx), last_failure_at/_code/_error} over the requests since
    `since`; a callback that made none is absent."""
    rows = await conn.fetch(SQL["callback_health"], list(callback_ids), account_id, since)
    return {r["callback_id"]: r for r in rows}


async def callback_latency(
    conn: asyncpg.Connection, account_id: int, callback_id: int, *, since: datetime, until: datetime, bucket: float
) -> list[asyncpg.Record]:
    """Per bucket of `bucket` seconds in [since, until): bucket (its start), requests, p ([p50, p90, p99] ms)."""
    return await conn.fetch(SQL["callback_latency"], callback_id, account_id, since, bucket, until)


async def recent_deliveries(
    conn: asyncpg.Connection, account_id: int, callback_id: int, limit: int
) -> list[asyncpg.Record]:
    """A callback's latest deliveries, newest first (rows for delivery_json)."""
    return await conn.fetch(SQL["recent_deliveries"], callback_id, account_id, limit)


async def recent_attempts(
    conn: asyncpg.Connection, account_id: int, callback_id: int, limit: int
) -> list[asyncpg.Record]:
    """A callback's latest requests, newest first (rows for attempt_json)."""
    return await conn.fetch(SQL["recent_attempts"], callback_id, account_id, limit)


async def callback_attempt(
    conn: asyncpg.Connection, account_id: int, callback_id: int, attempt_id: str
) -> asyncpg.Record:
    row = await conn.fetchrow(
        SQL["callback_attempt"], ids.decode("att", attempt_id, "attempt"), callback_id, account_id
    )
    if row is None:
        raise NotFound("no such attempt")
    return row
