"""Content Builder assets (HTML emails) of the Marketing Cloud surface, and the fields a Marketing Cloud send
definition holds beyond a native one: the asset it is made from, its subscriptions and classification.
A definition's content is resolved from its asset when the definition is saved (dispatcher/api/compat/
marketingcloud.py); the native definition then sends as any other."""

from __future__ import annotations

import re
from typing import Any

import asyncpg

from dispatcher.db import queries
from dispatcher.errors import Conflict, NotFound

SQL = queries("assets")
# Marketing Cloud personalization strings (`%%FirstName%%`) read the send's attributes, as Liquid does.
_PERSONALIZATION = re.compile(r"%%([A-Za-z_][A-Za-z0-9_]*)%%")
VIEW_FIELDS = {"html": "html", "text": "text", "subjectline": "subject", "preheader": "preheader"}


async def create_asset(
    conn: asyncpg.Connection, account_id: int, key: str, name: str, asset_type: dict[str, Any], views: dict[str, Any]
) -> asyncpg.Record:
    try:
        return await conn.fetchrow(SQL["create_asset"], account_id, key, name, asset_type, views)
    except asyncpg.UniqueViolationError:
        raise Conflict("an asset with this customerKey already exists", field="customerKey") from None


async def get_asset(conn: asyncpg.Connection, account_id: int, asset_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(SQL["get_asset"], account_id, asset_id)
    if row is None:
        raise NotFound("no such asset")
    return row


async def asset_by_key(conn: asyncpg.Connection, account_id: int, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(SQL["asset_by_key"], account_id, key)


async def list_assets(
    conn: asyncpg.Connection, account_id: int, *, key: str | None, name: str | None, limit: int, offset: int
) -> tuple[list[asyncpg.Record], int]:
    rows = await conn.fetch(SQL["list_assets"], account_id, key, name, limit, offset)
    return rows, (rows[0]["total"] if rows else 0)


def content_of(views: dict[str, Any]) -> dict[str, str]:
    """A native definition's content fields from an asset's views; `%%Name%%` becomes `{{ attributes.Name }}`."""
    out: dict[str, str] = {}
    for view, field in VIEW_FIELDS.items():
        text = (views.get(view) or {}).get("content")
        if text:
            out[field] = _PERSONALIZATION.sub(r"{{ attributes.\1 }}", text)
    return out


async def save_definition_extras(
    conn: asyncpg.Connection, definition_id: int, asset_key: str, subscriptions: dict[str, Any], classification: str
) -> None:
    await conn.execute(SQL["save_definition_extras"], definition_id, asset_key, subscriptions, classification)


async def definition_extras(conn: asyncpg.Connection, definition_ids: list[int]) -> dict[int, asyncpg.Record]:
    return {r["definition_id"]: r for r in await conn.fetch(SQL["definition_extras"], definition_ids)}
