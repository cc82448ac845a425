"""An account's suppression list: the addresses its sends skip (unsubscribed, hard-bounced, complained),
read and edited here. Entries are added where the reason is recorded: the unsubscribe link
(sending.sql `suppress`) and the event fan-out for hard bounces and complaints (events.sql `fan_out`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel

from dispatcher import events
from dispatcher.db import queries
from dispatcher.errors import NotFound

SQL = queries("suppressions")
REASONS = ("unsubscribed", "bounced", "complained")
MAX_ADDRESS = 320  # a recipient's longest address (events.recipient)


# A suppression as the API shows it: the response schema and, through suppression_json, every answer.
class SuppressionOut(BaseModel):
    address: str
    reason: str
    eventId: str | None
    createdAt: str


def suppression_json(row: asyncpg.Record) -> dict[str, Any]:
    return SuppressionOut(
        address=row["address"],
        reason=row["reason"],
        eventId=events.event_id(row["event_id"]) if row["event_id"] is not None else None,
        createdAt=row["created_at"].isoformat(),
    ).model_dump()


async def list_suppressions(
    conn: asyncpg.Connection,
    account_id: int,
    *,
    after_id: int,
    reason: str | None,
    address_prefix: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(SQL["list_suppressions"], account_id, after_id, reason, address_prefix, since, until, limit)


async def get_suppression(conn: asyncpg.Connection, account_id: int, address: str) -> asyncpg.Record:
    row = await conn.fetchrow(SQL["get_suppression"], account_id, address)
    if row is None:
        raise NotFound("address is not suppressed")
    return row


async def delete_suppression(conn: asyncpg.Connection, account_id: int, address: str) -> None:
    if await conn.fetchval(SQL["delete_suppression"], account_id, address) is None:
        raise NotFound("address is not suppressed")
