"""Sources: where a provider posts its events (`POST /in/{sourceId}`), with its config. Secret config
fields are encrypted at rest like signing secrets and never shown again: an answer names which are set."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
from pydantic import BaseModel

from dispatcher import ids
from dispatcher.crypto import Keyring
from dispatcher.db import queries
from dispatcher.errors import Conflict, NotFound
from dispatcher.inbound.providers import ADAPTERS

SQL = queries("sources")


class SourceOut(BaseModel):
    sourceId: str
    name: str
    provider: str
    description: str | None
    url: str
    config: dict[str, Any]
    secretsSet: list[str]
    createdAt: str
    updatedAt: str


def source_id(n: int) -> str:
    return ids.encode("src", n)


def ingest_url(base_url: str, n: int) -> str:
    return f"{base_url.rstrip('/')}/in/{source_id(n)}"


def split(provider: str, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(plain, secret) parts of a validated config."""
    secret_names = ADAPTERS[provider].secrets
    plain = {k: v for k, v in config.items() if k not in secret_names and v is not None}
    secret = {k: v for k, v in config.items() if k in secret_names and v is not None}
    return plain, secret


def source_json(row: asyncpg.Record, keyring: Keyring, base_url: str) -> dict[str, Any]:
    secret_names = sorted(secrets_of(row, keyring)) if row["secrets_enc"] is not None else []
    return SourceOut(
        sourceId=source_id(row["id"]),
        name=row["name"],
        provider=row["provider"],
        description=row["description"],
        url=ingest_url(base_url, row["id"]),
        config=row["config"],
        secretsSet=secret_names,
        createdAt=row["created_at"].isoformat(),
        updatedAt=row["updated_at"].isoformat(),
    ).model_dump()


def secrets_of(row: asyncpg.Record, keyring: Keyring) -> dict[str, Any]:
    if row["secrets_enc"] is None:
        return {}
    return orjson.loads(keyring.decrypt(row["secrets_enc"]))  # type: ignore[no-any-return]


def full_config(row: asyncpg.Record, keyring: Keyring) -> dict[str, Any]:
    """The config an adapter reads: plain fields and decrypted secrets."""
    return {**row["config"], **secrets_of(row, keyring)}


def _sealed(keyring: Keyring, secret: dict[str, Any]) -> bytes | None:
    return keyring.encrypt(orjson.dumps(secret).decode()) if secret else None


async def create_source(
    conn: asyncpg.Connection, keyring: Keyring, account_id: int, *, name: str, provider: str,
    description: str | None, config: dict[str, Any],
) -> asyncpg.Record:  # fmt: skip
    plain, secret = split(provider, config)
    try:
        return await conn.fetchrow(
            SQL["create_source"], account_id, name, provider, description, plain, _sealed(keyring, secret)
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a source named {name!r} already exists", field="name") from None


async def get_source(conn: asyncpg.Connection, account_id: int, public_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(SQL["get_source"], ids.decode("src", public_id, "source"), account_id)
    if row is None:
        raise NotFound("no such source")
    return row


async def list_sources(conn: asyncpg.Connection, account_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(SQL["list_sources"], account_id)


async def update_source(
    conn: asyncpg.Connection, keyring: Keyring, row: asyncpg.Record, changes: dict[str, Any],
    config: dict[str, Any] | None,
) -> asyncpg.Record:  # fmt: skip
    """Apply a PATCH; `config` is the whole new config (validated by the caller), or None to keep it."""
    plain, sealed = None, None
    if config is not None:
        plain, secret = split(row["provider"], config)
        sealed = _sealed(keyring, secret)
    try:
        return await conn.fetchrow(
            SQL["update_source"], row["id"], row["account_id"], changes.get("name"),
            "description" in changes, changes.get("description"), plain, config is not None, sealed,
        )  # fmt: skip
    except asyncpg.UniqueViolationError:
        raise Conflict("a source with this name already exists", field="name") from None


async def delete_source(conn: asyncpg.Connection, account_id: int, public_id: str) -> None:
    row = await get_source(conn, account_id, public_id)
    await conn.execute(SQL["delete_source"], row["id"], account_id)


class ReceiptOut(BaseModel):
    eventId: str
    sourceId: str
    receivedAt: str
    raw: Any


async def receipt(conn: asyncpg.Connection, account_id: int, public_event_id: str) -> dict[str, Any]:
    """The provider's raw event behind an event a source recorded (kept as long as the event)."""
    row = await conn.fetchrow(SQL["receipt"], ids.decode("evt", public_event_id, "event"), account_id)
    if row is None:
        raise NotFound("no provider event is kept for this event")
    return ReceiptOut(
        eventId=public_event_id, sourceId=source_id(row["source_id"]), receivedAt=row["received_at"].isoformat(),
        raw=row["raw"],
    ).model_dump()  # fmt: skip
