"""Callbacks (receiver URLs, ownership check, signing secrets) and subscriptions (what each receives)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, Field

from dispatcher import ids
from dispatcher.crypto import Keyring, new_signing_secret
from dispatcher.db import queries
from dispatcher.errors import Conflict, InvalidRequest, NotFound

SQL = queries("callbacks")
VERIFICATION_VALID_FOR = timedelta(hours=4)  # as in ENS


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# The response models are the mappers' output, so a field cannot be in one and missing from the other.
# Comments, not docstrings: pydantic would publish a docstring as the schema's description.
class VerificationOut(BaseModel):
    status: Literal["sent", "delivered", "failed"] = Field(
        description="sent: no answer recorded yet; delivered: the URL answered 2xx; failed: it did not"
    )
    attempts: int = Field(description="Requests made with the current key")
    lastAttemptAt: str | None
    statusCode: int | None = Field(description="The URL's answer to the last request, if it answered")
    error: str | None = Field(description="Why the last request got no answer: connection_error, timeout, ...")
    nextAttemptAt: str | None = Field(description="When it is sent again unless answered first; null: not again")
    resend: str | None = Field(description="The request that sends a fresh key now; null once verified")


class CallbackOut(BaseModel):
    callbackId: str
    name: str
    url: str
    description: str | None
    maxBatchSize: int
    format: str
    status: str
    consecutiveFailures: int
    failingSince: str | None
    disabledReason: str | None
    createdAt: str
    updatedAt: str
    verification: VerificationOut | None = Field(
        description="The ownership handshake: the latest verification request and its outcome"
    )
    signingSecret: str | None = None


def _verification(row: asyncpg.Record) -> VerificationOut | None:
    if row["verification_status"] is None:
        return None
    pending = row["status"] == "pending_verification"
    return VerificationOut(
        status=row["verification_status"],
        attempts=row["verification_attempts"],
        lastAttemptAt=_iso(row["verification_last_attempt_at"]),
        statusCode=row["verification_status_code"],
        error=row["verification_error"],
        nextAttemptAt=_iso(row["verification_next_at"]),
        resend=f"POST /v1/callbacks/{ids.encode('cb', row['id'])}/verification" if pending else None,
    )


def verification_json(row: asyncpg.Record) -> dict[str, Any] | None:
    """The latest handshake: None for a callback whose handshake predates this record (schema version 4)."""
    verification = _verification(row)
    return verification.model_dump() if verification else None


def callback_json(row: asyncpg.Record, signing_secret: str | None = None) -> dict[str, Any]:
    """signingSecret appears only in the answer that creates the callback, the one time it is shown."""
    return CallbackOut(
        callbackId=ids.encode("cb", row["id"]),
        name=row["name"],
        url=row["url"],
        description=row["description"],
        maxBatchSize=row["max_batch_size"],
        format=row["format"],
        status=row["status"],
        consecutiveFailures=row["consecutive_failures"],
        failingSince=row["failing_since"].isoformat() if row["failing_since"] else None,
        disabledReason=row["disabled_reason"],
        createdAt=row["created_at"].isoformat(),
        updatedAt=row["updated_at"].isoformat(),
        verification=_verification(row),
        signingSecret=signing_secret,
    ).model_dump(exclude={"signingSecret"} if signing_secret is None else None)


async def start_handshake(
    conn: asyncpg.Connection, keyring: Keyring, callback_id: int, account_id: int, *, lease: float
) -> tuple[asyncpg.Record, str]:
    """A fresh verification key, its handshake `sent` and leased to the caller for `lease` seconds (the
    caller sends it after commit; if it never records an outcome, a retrier sends it when the lease ends)."""
    key = secrets.token_urlsafe(24)
    row = await conn.fetchrow(
        SQL["start_handshake"], callback_id, account_id, key_hash(key), keyring.encrypt(key), lease
    )
    return row, key


async def create_callback(
    conn: asyncpg.Connection, keyring: Keyring, account_id: int, *, name: str, url: str,
    description: str | None, max_batch_size: int, lease: float, fmt: str = "standard",
) -> tuple[asyncpg.Record, str, str]:  # fmt: skip
    """Returns (row, signing secret, verification key); both secrets are shown only now."""
    secret = new_signing_secret()
    try:
        async with conn.transaction():
            row = await conn.fetchrow(SQL["create_callback"], account_id, name, url, description, max_batch_size, fmt)
            await conn.execute(SQL["add_secret"], row["id"], keyring.encrypt(secret))
            row, verification_key = await start_handshake(conn, keyring, row["id"], account_id, lease=lease)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a callback named {name!r} already exists", field="name") from None
    return row, secret, verification_key


async def get_callback(conn: asyncpg.Connection, account_id: int, callback_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(SQL["get_callback"], ids.decode("cb", callback_id, "callback"), account_id)
    if row is None:
        raise NotFound("no such callback")
    return row


async def list_callbacks(conn: asyncpg.Connection, account_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(SQL["list_callbacks"], account_id)


async def update_callback(
    conn: asyncpg.Connection, keyring: Keyring, account_id: int, callback_id: str, changes: dict[str, Any],
    *, lease: float,
) -> tuple[asyncpg.Record, str | None]:  # fmt: skip
    """Apply a PATCH (in the caller's transaction). A new URL must be verified again: returns the new
    verification key then, its handshake leased to the caller as in start_handshake."""
    current = await get_callback(conn, account_id, callback_id)
    status = changes.get("status")
    if status and current["status"] == "pending_verification":
        raise InvalidRequest("verify the callback before changing its status", field="status")
    new_url = bool(changes.get("url")) and changes["url"] != current["url"]
    if new_url:
        status = "pending_verification"
    try:
        row = await conn.fetchrow(
            SQL["update_callback"], current["id"], account_id, changes.get("name"), changes.get("url"),
            "description" in changes, changes.get("description"), changes.get("maxBatchSize"), status,
            changes.get("format"),
        )  # fmt: skip
    except asyncpg.UniqueViolationError:
        raise Conflict("a callback with this name already exists", field="name") from None
    verification_key = None
    if new_url:
        row, verification_key = await start_handshake(conn, keyring, current["id"], account_id, lease=lease)
    if status == "active" and current["status"] == "disabled":
        # Deliveries that waited while it was disabled flow again, oldest first.
        await conn.execute(SQL["resume_deliveries"], current["id"])
        await conn.execute(SQL["notify_deliveries"])
    return row, verification_key


async def delete_callback(conn: asyncpg.Connection, account_id: int, callback_id: str) -> None:
    if await conn.fetchval(SQL["delete_callback"], ids.decode("cb", callback_id, "callback"), account_id) is None:
        raise NotFound("no such callback")


async def new_verification(
    conn: asyncpg.Connection, keyring: Keyring, account_id: int, callback_id: str, *, lease: float
) -> tuple[asyncpg.Record, str | None]:
    """A fresh key to send, or no key when the callback is verified already (a retry, or a receiver
    that completed the handshake itself, got there first): there is nothing left to prove."""
    row = await get_callback(conn, account_id, callback_id)
    if row["status"] != "pending_verification":
        return row, None
    return await start_handshake(conn, keyring, row["id"], account_id, lease=lease)


async def verify(conn: asyncpg.Connection, account_id: int, callback_id: str, key: str) -> asyncpg.Record:
    row = await get_callback(conn, account_id, callback_id)
    if row["status"] != "pending_verification":
        return row  # verifying twice is harmless
    expected = row["verification_key_hash"]
    if expected is None or not hmac.compare_digest(bytes(expected), key_hash(key)):
        raise InvalidRequest(
            "verification key does not match", field="verificationKey", code="invalid_verification_key"
        )
    if datetime.now(UTC) - row["verification_sent_at"] > VERIFICATION_VALID_FOR:
        raise InvalidRequest("verification key expired; request a new one", field="verificationKey", code="expired")
    return await conn.fetchrow(SQL["mark_verified"], row["id"], account_id)


async def rotate_secret(
    conn: asyncpg.Connection, keyring: Keyring, account_id: int, callback_id: str, grace: float
) -> str:
    row = await get_callback(conn, account_id, callback_id)
    secret = new_signing_secret()
    async with conn.transaction():
        await conn.execute(SQL["expire_secrets"], row["id"], grace)
        await conn.execute(SQL["add_secret"], row["id"], keyring.encrypt(secret))
        await conn.execute(SQL["bump_secrets_version"], row["id"])
    return secret


# --- subscriptions -----------------------------------------------------------------------------


class SubscriptionOut(BaseModel):
    subscriptionId: str
    name: str
    callbackId: str
    eventTypes: list[str]
    filters: dict[str, Any]
    status: str
    createdAt: str
    updatedAt: str


def subscription_json(row: asyncpg.Record) -> dict[str, Any]:
    return SubscriptionOut(
        subscriptionId=ids.encode("sub", row["id"]),
        name=row["name"],
        callbackId=ids.encode("cb", row["callback_id"]),
        eventTypes=list(row["event_types"]),
        filters=row["filters"],
        status=row["status"],
        createdAt=row["created_at"].isoformat(),
        updatedAt=row["updated_at"].isoformat(),
    ).model_dump()


async def create_subscription(
    conn: asyncpg.Connection, account_id: int, *, name: str, callback_id: str, event_types: list[str],
    filters: dict[str, Any], status: str,
) -> asyncpg.Record:  # fmt: skip
    callback = await get_callback(conn, account_id, callback_id)
    try:
        return await conn.fetchrow(
            SQL["create_subscription"], account_id, callback["id"], name, event_types, filters, status
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a subscription named {name!r} already exists", field="name") from None


async def get_subscription(conn: asyncpg.Connection, account_id: int, subscription_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(SQL["get_subscription"], ids.decode("sub", subscription_id, "subscription"), account_id)
    if row is None:
        raise NotFound("no such subscription")
    return row


async def list_subscriptions(
    conn: asyncpg.Connection, account_id: int, callback_id: str | None
) -> list[asyncpg.Record]:
    cb = ids.decode("cb", callback_id, "callback") if callback_id else None
    return await conn.fetch(SQL["list_subscriptions"], account_id, cb)


async def update_subscription(
    conn: asyncpg.Connection, account_id: int, subscription_id: str, changes: dict[str, Any]
) -> asyncpg.Record:
    sid = ids.decode("sub", subscription_id, "subscription")
    try:
        row = await conn.fetchrow(
            SQL["update_subscription"], sid, account_id, changes.get("name"), changes.get("eventTypes"),
            changes.get("filters"), changes.get("status"),
        )  # fmt: skip
    except asyncpg.UniqueViolationError:
        raise Conflict("a subscription with this name already exists", field="name") from None
    if row is None:
        raise NotFound("no such subscription")
    return row


async def delete_subscription(conn: asyncpg.Connection, account_id: int, subscription_id: str) -> None:
    sid = ids.decode("sub", subscription_id, "subscription")
    if await conn.fetchval(SQL["delete_subscription"], sid, account_id) is None:
        raise NotFound("no such subscription")
