"""Send definitions and messages in the database: CRUD, the creation quota, accepting sends (each with
its `queued` event in the same transaction), drafts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, Field

from dispatcher import events
from dispatcher.db import queries
from dispatcher.errors import Conflict, InvalidRequest, NotFound, RateLimited
from dispatcher.sending.errors import TemplateError
from dispatcher.sending.models import DefinitionContent, DefinitionCreate, DefinitionPatch, SendRequest
from dispatcher.sending.templates import check_literal_ranges

SQL = queries("sending")


# The response model is the mapper's output, so a field cannot be in one and missing from the other.
# A comment, not a docstring: pydantic would publish a docstring as the schema's description.
class DefinitionOut(BaseModel):
    definitionKey: str
    transactionalMessageId: int = Field(
        description="The definition's number, which Customer.io's transactional_message_id may name"
    )
    name: str
    status: str
    description: str | None
    content: dict[str, Any]
    options: dict[str, Any]
    createdAt: str
    updatedAt: str


def definition_json(row: asyncpg.Record) -> dict[str, Any]:
    return DefinitionOut(
        definitionKey=row["definition_key"],
        transactionalMessageId=row["id"],
        name=row["name"],
        status=row["status"],
        description=row["description"],
        content=row["content"],
        options=row["options"],
        createdAt=row["created_at"].isoformat(),
        updatedAt=row["updated_at"].isoformat(),
    ).model_dump()


async def create_definition(
    conn: asyncpg.Connection, account_id: int, body: DefinitionCreate, quota: int
) -> asyncpg.Record:
    async with conn.transaction():
        await conn.execute(SQL["lock_definitions"], account_id % 2**31)
        if await conn.fetchval(SQL["definitions_created_recently"], account_id) >= quota:
            raise RateLimited(
                f"at most {quota} send definitions may be created per 7 days", headers={"Retry-After": "3600"}
            )
        try:
            return await conn.fetchrow(
                SQL["create_definition"], account_id, body.definitionKey, body.name, body.status, body.description,
                body.content.model_dump(by_alias=True, exclude_none=True), body.options.model_dump(),
            )  # fmt: skip
        except asyncpg.UniqueViolationError as exc:
            field = "name" if "name" in (exc.constraint_name or "") else "definitionKey"
            raise Conflict(f"a definition with this {field} already exists", field=field) from None


async def get_definition(conn: asyncpg.Connection, account_id: int, key: str) -> asyncpg.Record:
    row = await conn.fetchrow(SQL["get_definition"], account_id, key)
    if row is None:
        raise NotFound("no such definition")
    return row


async def list_definitions(conn: asyncpg.Connection, account_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(SQL["list_definitions"], account_id)


async def update_definition(
    conn: asyncpg.Connection, account_id: int, key: str, patch: DefinitionPatch
) -> asyncpg.Record:
    changes = patch.model_dump(by_alias=True, exclude_unset=True)
    content = patch.content.model_dump(by_alias=True, exclude_none=True) if patch.content else None
    options = patch.options.model_dump() if patch.options else None
    async with conn.transaction():
        before = await get_definition(conn, account_id, key)
        try:
            row = await conn.fetchrow(
                SQL["update_definition"], account_id, key, changes.get("definitionKey"), changes.get("name"),
                changes.get("status"), "description" in changes, changes.get("description"), content, options,
            )  # fmt: skip
        except asyncpg.UniqueViolationError as exc:
            field = "name" if "name" in (exc.constraint_name or "") else "definitionKey"
            raise Conflict(f"a definition with this {field} already exists", field=field) from None
        if row is None:
            raise NotFound("no such definition")
        if row["status"] == "active" and before["status"] != "active":
            status = await conn.execute(SQL["release_waiting"], account_id, row["definition_key"])
            if not status.endswith(" 0"):
                await conn.execute(SQL["notify_messages"])
    return row


async def delete_definition(conn: asyncpg.Connection, account_id: int, key: str) -> None:
    if await conn.fetchval(SQL["delete_definition"], account_id, key) is None:
        raise NotFound("no such definition")


# --- accepting sends ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NewSend:
    message_key: str
    recipient: str
    request: dict[str, Any]
    status: str  # draft | scheduled | queued
    send_at: datetime


def plan_send(message_key: str, body: SendRequest) -> NewSend:
    send_at = body.effective_send_at()
    status = "draft" if body.queueDraft else ("scheduled" if send_at else "queued")
    stored = body.model_dump(by_alias=True, exclude_none=True, mode="json")
    stored.pop("queueDraft", None)
    stored.pop("sendAt", None)
    return NewSend(message_key, body.recipient.to, stored, status, send_at or datetime.now(UTC))


def check_content(body: SendRequest | None, definition: asyncpg.Record | None) -> None:
    """The definition, with what the send overrides (none for batch sends), must make a whole message."""
    if definition is None:
        return
    content = DefinitionContent.model_validate(definition["content"])
    missing = (body.resolve_content(content) if body else content).missing_for_send()
    if missing:
        name = "html or text" if missing[0] == "html" else missing[0]
        raise InvalidRequest(f"{name} is required: the definition does not provide it", field=missing[0])


def check_template_limits(content: DefinitionContent | SendRequest | None, max_value: int, prefix: str = "") -> None:
    """Refuse at save what is known to go over the value limit before any send renders it."""
    if content is None:
        return
    for name in ("from_", "replyTo", "subject", "html", "text", "preheader"):
        source = getattr(content, name)
        if source is None:
            continue
        try:
            check_literal_ranges(source, max_value=max_value)
        except TemplateError as exc:
            field = prefix + name.rstrip("_")
            raise InvalidRequest(
                f"invalid Liquid template: {exc.message}", field=field, code="invalid_template"
            ) from None


async def accept(
    conn: asyncpg.Connection, account_id: int, definition_key: str | None, sends: Sequence[NewSend]
) -> tuple[dict[str, str], dict[str, str]]:
    """Store sends with their `queued` events (drafts get none) in one statement: atomic on its own,
    or part of the caller's transaction. Returns ({key: status} accepted, {key: existing status} for
    keys already used)."""
    return (await accept_groups(conn, [(account_id, definition_key, sends)]))[0]


async def accept_groups(
    conn: asyncpg.Connection, groups: Sequence[tuple[int, str | None, Sequence[NewSend]]]
) -> list[tuple[dict[str, str], dict[str, str]]]:
    """`accept` for several requests, each with its account and definition, in one statement. A key
    used by an earlier group of the same account is taken, as if that group had come first."""
    flat = [(account, definition, s) for account, definition, sends in groups for s in sends]
    rows = await conn.fetch(
        SQL["accept_sends"], [a for a, _, _ in flat], [d for _, d, _ in flat], [s.message_key for _, _, s in flat],
        [s.status for _, _, s in flat], [s.request for _, _, s in flat], [s.recipient for _, _, s in flat],
        [s.send_at for _, _, s in flat],
    )  # fmt: skip
    inserted = {(r["account_id"], r["message_key"]): r["status"] for r in rows}
    unclaimed = set(inserted)  # the first group with a new key is the one that stored it
    results: list[tuple[dict[str, str], dict[str, str]]] = []
    taken: dict[int, set[str]] = {}
    for account, _, sends in groups:
        accepted: dict[str, str] = {}
        for s in sends:
            if (account, s.message_key) in unclaimed:
                unclaimed.discard((account, s.message_key))
                accepted[s.message_key] = inserted[(account, s.message_key)]
            elif s.message_key not in accepted:
                taken.setdefault(account, set()).add(s.message_key)
        results.append((accepted, {}))
    existing: dict[tuple[int, str], str] = {}
    for account, keys in taken.items():
        for r in await conn.fetch(SQL["message_statuses"], account, list(keys)):
            existing[(account, r["message_key"])] = r["status"]
    for (account, _, sends), (accepted, found) in zip(groups, results, strict=True):
        for s in sends:
            if s.message_key not in accepted and (account, s.message_key) in existing:
                found[s.message_key] = existing[(account, s.message_key)]
    return results


async def get_message(conn: asyncpg.Connection, account_id: int, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(SQL["get_message"], account_id, key)


async def send_draft(conn: asyncpg.Connection, account_id: int, key: str) -> asyncpg.Record:
    row = await conn.fetchrow(SQL["send_draft"], account_id, key)
    if row is None:
        existing = await get_message(conn, account_id, key)
        if existing is None:
            raise NotFound("no such message")
        raise Conflict(f"message is {existing['status']}, not a draft", extra={"status": existing["status"]})
    event = events.NewEvent(
        type="queued", message_key=key, data={}, definition_key=row["definition_key"], recipient=row["recipient"]
    )
    await events.record_events(conn, account_id, [event])
    await conn.execute(SQL["notify_messages"])
    return row


async def discard_draft(conn: asyncpg.Connection, account_id: int, key: str) -> None:
    if await conn.fetchval(SQL["delete_draft"], account_id, key) is None:
        existing = await get_message(conn, account_id, key)
        if existing is None:
            raise NotFound("no such message")
        raise Conflict(f"message is {existing['status']}, not a draft", extra={"status": existing["status"]})


async def list_waiting(
    conn: asyncpg.Connection, account_id: int, status: str, limit: int = 100
) -> list[asyncpg.Record]:
    """An account's drafts (status 'draft') or scheduled sends ('scheduled'), the next due first."""
    if status not in ("draft", "scheduled"):
        raise ValueError(f"not a waiting status: {status}")
    return await conn.fetch(SQL["messages_waiting"], account_id, status, limit)
