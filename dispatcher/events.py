"""Message lifecycle events: their vocabulary, the one way to record them, and history queries.

Every producer (the ingest API, the mail sender, tracking, operational events) calls
`record_events`, which writes the events and their deliveries (the outbox) in the caller's
transaction and wakes the workers on commit.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, Strict

from dispatcher import ids
from dispatcher.db import queries
from dispatcher.errors import InvalidRequest
from dispatcher.inputs import Int

MESSAGE_EVENT_TYPES = (
    "queued", "sent", "delivered", "deferred", "bounced",
    "opened", "clicked", "unsubscribed", "complained", "failed",
)  # fmt: skip
OPERATIONAL_EVENT_TYPES = ("callback.failing", "callback.disabled")
EVENT_TYPES = MESSAGE_EVENT_TYPES + OPERATIONAL_EVENT_TYPES

SQL = queries("events")


def _no_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000; refuse it up front rather than fail at insert."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("must not contain the NUL character")
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_nul(k)
            _no_nul(v)
    elif isinstance(value, list):
        for v in value:
            _no_nul(v)
    return value


def _text(value: Any) -> Any:
    """Timestamps come as RFC 3339 text; a number is not one (lax parsing would read it as unix seconds)."""
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 timestamp string, e.g. 2030-01-01T09:00:00Z")
    return value


def _in_range(value: datetime) -> datetime:
    """An aware datetime PostgreSQL can store: year 1 at +01:00 is before year 1 in UTC."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of the supported date range") from None


# Strict(False): request models are strict, but a timestamp is text in JSON and must be parsed.
Timestamp = Annotated[AwareDatetime, BeforeValidator(_text), Strict(False), AfterValidator(_in_range)]
Text = Annotated[str, AfterValidator(_no_nul)]
FUTURE_LIMIT = timedelta(days=1)


def _not_ahead(value: datetime) -> datetime:
    """History is partitioned by when an event was recorded; a list bounded by occurredAt skips the days
    recorded before its start minus this limit, so an event may not claim to happen later than that."""
    if value > datetime.now(UTC) + FUTURE_LIMIT:
        raise ValueError("is more than a day ahead of the server's clock")
    return value


OccurredAt = Annotated[Timestamp, AfterValidator(_not_ahead)]
Key = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_no_nul)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_no_nul)]


class _Data(BaseModel):
    """Per-type event data: known fields are typed, anything else is kept as given."""

    model_config = ConfigDict(extra="allow", strict=True)


class EngagementData(_Data):
    userAgent: Text | None = None
    ipAddress: Text | None = None


class BouncedData(_Data):
    bounceType: Literal["hard", "soft"]
    smtpCode: Int | None = None
    reason: Text | None = None


class ClickedData(EngagementData):
    url: Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_no_nul)]


class FailedData(_Data):
    reason: Annotated[str, Field(min_length=1), AfterValidator(_no_nul)]
    statusCode: Int | None = None


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    messageKey: Key
    id: Key | None = Field(None, description="Client event id; re-sending it within 72 hours records nothing new.")
    occurredAt: OccurredAt | None = None
    definitionKey: Key | None = None
    recipient: Annotated[str, Field(min_length=1, max_length=320), AfterValidator(_no_nul)] | None = None

    def data_dict(self) -> dict[str, Any]:
        data = getattr(self, "data", None)
        if data is None:
            return {}
        if isinstance(data, BaseModel):
            return _no_nul(data.model_dump(exclude_none=True))
        return data


class GenericEvent(_EventBase):
    type: Literal["queued", "sent", "delivered", "deferred", "unsubscribed", "complained"]
    data: JsonObject | None = None


class OpenedEvent(_EventBase):
    type: Literal["opened"]
    data: EngagementData | None = None


class ClickedEvent(_EventBase):
    type: Literal["clicked"]
    data: ClickedData


class BouncedEvent(_EventBase):
    type: Literal["bounced"]
    data: BouncedData


class FailedEvent(_EventBase):
    type: Literal["failed"]
    data: FailedData


EventIn = Annotated[GenericEvent | OpenedEvent | ClickedEvent | BouncedEvent | FailedEvent, Field(discriminator="type")]


class EventBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    events: Annotated[list[EventIn], Field(min_length=1, max_length=1000)]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event as producers inside the service hand it over (already trusted)."""

    type: str
    message_key: str
    data: dict[str, Any]
    client_id: str | None = None
    occurred_at: datetime | None = None
    definition_key: str | None = None
    recipient: str | None = None

    @classmethod
    def from_api(cls, e: _EventBase) -> NewEvent:
        return cls(
            type=e.type,  # type: ignore[attr-defined]
            message_key=e.messageKey,
            data=e.data_dict(),
            client_id=e.id,
            occurred_at=e.occurredAt,
            definition_key=e.definitionKey,
            recipient=e.recipient,
        )


def event_id(n: int) -> str:
    return ids.encode("evt", n)


# An event as the API shows it: the response schema and, through event_json, every answer.
class EventOut(BaseModel):
    eventId: str
    id: str | None
    type: str
    messageKey: str
    definitionKey: str | None
    recipient: str | None
    occurredAt: str
    recordedAt: str
    data: dict[str, Any]


def event_json(row: asyncpg.Record) -> dict[str, Any]:
    return EventOut(
        eventId=event_id(row["id"]),
        id=row["client_id"],
        type=row["type"],
        messageKey=row["message_key"],
        definitionKey=row["definition_key"],
        recipient=row["recipient"],
        occurredAt=row["occurred_at"].isoformat(),
        recordedAt=row["recorded_at"].isoformat(),
        data=row["data"],
    ).model_dump()


async def record_event(
    conn: asyncpg.Connection, account_id: int, type_: str, message_key: str, data: dict[str, Any]
) -> None:
    """One event from inside the service (a callback turning failing, …), in the caller's transaction."""
    await record_events(conn, account_id, [NewEvent(type=type_, message_key=message_key, data=data)])


async def record_events(
    conn: asyncpg.Connection, account_id: int, events: Sequence[NewEvent]
) -> tuple[list[asyncpg.Record], int]:
    """Store events and their deliveries in one statement (atomic on its own, or part of the caller's
    transaction). Returns the rows in input order (the original row for a client id already stored)
    and how many were new."""
    return (await record_groups(conn, [(account_id, events)]))[0]


async def record_test_event(
    conn: asyncpg.Connection, account_id: int, callback_id: int, *, type_: str, message_key: str,
    recipient: str | None, data: dict[str, Any],
) -> asyncpg.Record:  # fmt: skip
    """An event delivered to one callback only (a test the callback's owner asked for), not fanned out to
    the account's subscriptions; returns its row with the delivery's id (delivery_id)."""
    row: asyncpg.Record = await conn.fetchrow(
        SQL["record_test_event"], account_id, callback_id, type_, message_key, recipient, data
    )
    return row


async def record_groups(
    conn: asyncpg.Connection, groups: Sequence[tuple[int, Sequence[NewEvent]]]
) -> list[tuple[list[asyncpg.Record], int]]:
    """`record_events` for several producers, each with its account, in one statement: per group, its
    rows in input order and how many were new. A client id stored before, or by an earlier group of
    the same account, answers with the stored row and does not count as new."""
    now = datetime.now(UTC)
    flat = [(account, e) for account, events in groups for e in events]
    rows = await conn.fetch(
        SQL["record_events"],
        [account for account, _ in flat],
        [e.client_id for _, e in flat],
        [e.type for _, e in flat],
        [e.message_key for _, e in flat],
        [e.definition_key for _, e in flat],
        [e.recipient for _, e in flat],
        [e.occurred_at or now for _, e in flat],
        [e.data for _, e in flat],
    )
    inserted = sorted(rows, key=lambda r: r["id"])  # ids follow input order
    fresh = iter(r for r in inserted if r["client_id"] is None)  # only client ids can be skipped
    stored = {(r["account_id"], r["client_id"]): r for r in inserted if r["client_id"] is not None}
    unclaimed = set(stored)  # the first event with a new client id is the one that created it
    missing: dict[int, list[str]] = {}
    plans: list[tuple[list[asyncpg.Record | tuple[int, str]], int]] = []
    for account, events in groups:
        plan: list[asyncpg.Record | tuple[int, str]] = []
        created = 0
        for e in events:
            if e.client_id is None:
                plan.append(next(fresh))
                created += 1
                continue
            key = (account, e.client_id)
            plan.append(key)
            if key in unclaimed:
                unclaimed.discard(key)
                created += 1
            elif key not in stored:
                missing.setdefault(account, []).append(e.client_id)
        plans.append((plan, created))
    for account, client_ids in missing.items():
        for r in await conn.fetch(SQL["events_by_client_id"], account, client_ids):
            stored[(account, r["client_id"])] = r
    return [([stored[x] if isinstance(x, tuple) else x for x in plan], created) for plan, created in plans]


# --- history -------------------------------------------------------------------------------------

# Delivery outcome precedence, highest first. Engagement (opened, clicked, unsubscribed,
# complained) never overrides an outcome: it only implies the message was delivered.
_OUTCOME_RANK = {
    "queued": 1,
    "deferred": 2,
    "sent": 3,
    "soft_bounce": 4,
    "delivered": 5,
    "bounced": 6,
    "failed": 7,
}
ENGAGEMENT_TYPES = ("opened", "clicked", "unsubscribed", "complained")


def message_status(events: list[tuple[str, dict[str, Any]]]) -> str | None:
    """The status a message's (type, data) events add up to; see README "Message status"."""
    best, best_rank = None, 0
    for type_, data in events:
        key = type_
        if type_ == "bounced" and data.get("bounceType") == "soft":
            key = "soft_bounce"
        elif type_ in ENGAGEMENT_TYPES:
            key = "delivered"
        rank = _OUTCOME_RANK.get(key, 0)
        if rank > best_rank:
            best, best_rank = ("bounced" if key == "soft_bounce" else key), rank
    return best


# A page's cursor is the id of its last item: digits, a shape the API document can state exactly.
CURSOR_PATTERN = "^[0-9]{1,18}$"
_CURSOR = re.compile("[0-9]{1,18}")


def _check_cursor(value: str) -> str:
    if not _CURSOR.fullmatch(value):
        raise ValueError("is not a cursor this API returned (1 to 18 digits)")
    return value


Cursor = Annotated[str, AfterValidator(_check_cursor), Field(json_schema_extra={"pattern": CURSOR_PATTERN})]


def encode_cursor(last_id: int) -> str:
    return str(last_id)


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    if not _CURSOR.fullmatch(cursor):
        raise InvalidRequest("cursor is not one this API returned", field="cursor")
    return int(cursor)


async def keyset_page(
    name: str, cursor: str | None, limit: int,
    fetch: Callable[[int, int], Awaitable[Sequence[Mapping[str, Any]]]], item: Callable[[Any], Any],
) -> dict[str, Any]:  # fmt: skip
    """One page of a listing ordered by id: `fetch(after_id, limit)` reads the rows after the cursor,
    `item` shapes each. A full page carries the next page's cursor, even when nothing follows it (that
    request answers an empty page); a short one is the last."""
    rows = await fetch(decode_cursor(cursor), limit)
    next_cursor = encode_cursor(rows[-1]["id"]) if len(rows) == limit else None
    return {name: [item(r) for r in rows], "nextCursor": next_cursor}


async def list_events(
    conn: asyncpg.Connection,
    account_id: int,
    *,
    after_id: int,
    types: list[str] | None,
    message_key: str | None,
    definition_key: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(
        SQL["list_events"], account_id, after_id, types, message_key, definition_key, since, until, limit
    )


async def message_timeline(conn: asyncpg.Connection, account_id: int, message_key: str) -> list[asyncpg.Record]:
    return await conn.fetch(SQL["message_events"], account_id, message_key)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events an operator's tail shows: one account or all (None), some types, one message."""

    account_id: int | None = None
    types: list[str] | None = None
    message_key: str | None = None


async def latest_events(conn: asyncpg.Connection, f: EventFilter, limit: int) -> list[asyncpg.Record]:
    """The newest `limit` matching events of any account, oldest first, each with its account's name."""
    rows = await conn.fetch(SQL["latest_events"], f.account_id, f.types, f.message_key, limit)
    return rows[::-1]


async def events_after(conn: asyncpg.Connection, f: EventFilter, after_id: int, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(SQL["events_after"], after_id, f.account_id, f.types, f.message_key, limit)


async def last_event_id(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(SQL["last_event_id"]))


async def search_events(
    conn: asyncpg.Connection,
    account_id: int,
    *,
    before_id: int | None,
    types: list[str] | None,
    message_key: str | None,
    definition_key: str | None,
    recipient: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[asyncpg.Record]:
    """The console's search: newest first, keyset-paginated backwards (rows before `before_id`)."""
    return await conn.fetch(
        SQL["search_events"], account_id, before_id or 2**63 - 1, types, message_key, definition_key, recipient,
        since, until, limit,
    )  # fmt: skip
