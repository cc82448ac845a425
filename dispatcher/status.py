"""The state of an instance at a glance, for its operator: schema, backlogs, callbacks by state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from dispatcher.db import queries

SQL = queries("status")


@dataclass(frozen=True, slots=True)
class Status:
    schema_version: int
    pending_deliveries: int
    oldest_due: datetime | None
    callbacks: dict[str, int]
    messages_waiting: int
    next_message_due: datetime | None


async def has_schema(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(SQL["schema_present"]))


async def read(conn: asyncpg.Connection, account_id: int | None) -> Status:
    """One account's figures, or every account's (None)."""
    backlog = await conn.fetchrow(SQL["delivery_backlog"], account_id)
    messages = await conn.fetchrow(SQL["messages_waiting"], account_id)
    return Status(
        schema_version=int(await conn.fetchval(SQL["schema_version"])),
        pending_deliveries=backlog["pending"],
        oldest_due=backlog["oldest_due"],
        callbacks={r["status"]: r["n"] for r in await conn.fetch(SQL["callbacks_by_status"], account_id)},
        messages_waiting=messages["waiting"],
        next_message_due=messages["next_due"],
    )
