"""Callbacks (receiver URLs, ownership check, signing secrets) and subscriptions (what each receives)."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple

import asyncpg
from pydantic import BaseModel, Field

from dispatcher import events, ids
from dispatcher.crypto import Keyring, new_signing_key, new_signing_secret, public_key
from dispatcher.db import queries
from dispatcher.errors import Conflict, InvalidRequest, NotFound
from dispatcher.filters import compile_filter

SQL = queries("callbacks")
VERIFICATION_VALID_FOR = timedelta(hours=4)  # as in ENS
# A manual pause is paused_until 'infinity' (asyncpg reads it as a naive datetime.max): the worker's own
# pauses (a failing callback's next probe, a receiver's Retry-After) are finite, and its health updates
# keep this one.
PAUSED_FOR_GOOD = datetime.max


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


class RateLimitOut(BaseModel):
    perSecond: float
    burst: int


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
    paused: bool = Field(description="Paused by request: nothing is sent until it is resumed; deliveries wait")
    createdAt: str
    updatedAt: str
    verification: VerificationOut | None = Field(
        description="The ownership handshake: the latest verification request and its outcome"
    )
    signature: str = Field(description="v1: HMAC-SHA256 with the signing secret; v1a: ed25519, verified with publicKey")
    publicKey: str | None = Field(description="v1a: the ed25519 public key (whpk_<base64>) receivers verify with")
    previousPublicKey: str | None = Field(
        description="A rotated-out public key that still signs during the rotation's grace period"
    )
    ordering: str = Field(description="none, or messageKey: each message's events in order, one at a time")
    rateLimit: RateLimitOut | None = Field(description="Requests per second and burst, shared by every worker")
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


def is_paused(row: asyncpg.Record) -> bool:
    until = row["paused_until"]
    return until is not None and until.replace(tzinfo=None) == PAUSED_FOR_GOOD


def callback_json(
    row: asyncpg.Record, signing_secret: str | None = None, public_keys: Sequence[str] = ()
) -> dict[str, Any]:
    """signingSecret appears only in the answer that creates the callback, the one time it is shown.
    `public_keys`: those of its live v1a keys, newest first (see `public_keys`)."""
    current = list(public_keys[:1]) if row["signature"] == "v1a" else []
    previous = [k for k in public_keys if k not in current][:1]
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
        paused=is_paused(row),
        createdAt=row["created_at"].isoformat(),
        updatedAt=row["updated_at"].isoformat(),
        verification=_verification(row),
        signature=row["signature"],
        publicKey=current[0] if current else None,
        previousPublicKey=previous[0] if previous else None,
        ordering=row["ordering"],
        rateLimit=RateLimitOut(perSecond=row["rate_per_second"], burst=row["rate_burst"])
        if row["rate_per_second"] is not None
        else None,
        signingSecret=signing_secret,
    ).model_dump(exclude={"signingSecret"} if signing_secret is None else None)


async def public_keys(
    conn: asyncpg.Connection, keyring: Keyring, rows: Sequence[asyncpg.Record]
) -> dict[int, list[str]]:
    """callback id → the public keys of its live v1a keys, newest first (derived from the stored private
    keys: only callbacks that are or were lately v1a have any)."""
    keys: dict[int, list[str]] = {}
    for r in await conn.fetch(SQL["live_secrets_of"], [row["id"] for row in rows]):
        if (key := public_key(keyring.decrypt(r["secret_enc"]))) is not None:
            keys.setdefault(r["callback_id"], []).append(key)
    return keys


async def callbacks_json(
    conn: asyncpg.Connection, keyring: Keyring, rows: Sequence[asyncpg.Record], signing_secret: str | None = None
) -> list[dict[str, Any]]:
    """The rows as callback JSON with their public keys (signing_secret only with a single new callback)."""
    keys = await public_keys(conn, keyring, rows)
    return [callback_json(r, signing_secret, keys.get(r["id"], ())) for r in rows]


def check_signature(fmt: str, signature: str, field: str) -> None:
    """v1a is a Standard Webhooks scheme: the ENS and Customer.io formats sign with an HMAC secret."""
    if signature == "v1a" and fmt != "standard":
        raise InvalidRequest(f"signature 'v1a' needs format 'standard', not {fmt!r}", field=field)


def _new_key(signature: str) -> str:
    return new_signing_key() if signature == "v1a" else new_signing_secret()


class NewKey(NamedTuple):
    """A new signing key, as it may be shown: the HMAC secret (v1) once, or the public key (v1a)."""

    secret: str | None
    public_key: str | None


def _shown(key: str) -> NewKey:
    pk = public_key(key)
    return NewKey(None, pk) if pk else NewKey(key, None)


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
    description: str | None, max_batch_size: int, lease: float, fmt: str = "standard", signature: str = "v1",
    ordering: str = "none", rate: dict[str, Any] | None = None,
) -> tuple[asyncpg.Record, str | None, str]:  # fmt: skip
    """Returns (row, signing secret, verification key); both secrets are shown only now. A v1a callback has
    no secret to show (None): its receivers verify with the public key in its JSON."""
    check_signature(fmt, signature, "signature")
    secret = _new_key(signature)
    try:
        async with conn.transaction():
            row = await conn.fetchrow(SQL["create_callback"], account_id, name, url, description, max_batch_size, fmt)
            await conn.execute(SQL["add_secret"], row["id"], keyring.encrypt(secret))
            if signature != row["signature"]:
                await conn.execute(SQL["set_signature"], row["id"], signature)
            if ordering != "none" or rate:
                await set_controls(conn, row, ordering=ordering, rate=rate)
            row, verification_key = await start_handshake(conn, keyring, row["id"], account_id, lease=lease)
    except asyncpg.UniqueViolationError:
        raise Conflict(f"a callback named {name!r} already exists", field="name") from None
    return row, _shown(secret).secret, verification_key


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
    signature = changes.get("signature") or current["signature"]
    check_signature(
        changes.get("format") or current["format"], signature, "signature" if changes.get("signature") else "format"
    )
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
    if "paused" in changes and changes["paused"] is not None:
        row = await set_paused(conn, account_id, callback_id, changes["paused"])
    if changes.get("ordering") or "rateLimit" in changes:
        rate = changes["rateLimit"] if "rateLimit" in changes else _rate(row)
        row = await set_controls(conn, row, ordering=changes.get("ordering") or row["ordering"], rate=rate)
    return row, verification_key


def _rate(row: asyncpg.Record) -> dict[str, Any] | None:
    return {"perSecond": row["rate_per_second"], "burst": row["rate_burst"]} if row["rate_per_second"] else None


async def set_controls(
    conn: asyncpg.Connection, row: asyncpg.Record, *, ordering: str, rate: dict[str, Any] | None
) -> asyncpg.Record:
    """Set a callback's ordering and rate limit (in the caller's transaction). Its queued deliveries follow a
    new ordering at once; a new limit starts with a full bucket (or what is left of the current one)."""
    per_second = rate["perSecond"] if rate else None
    burst = (rate.get("burst") or max(1, math.ceil(per_second))) if rate and per_second else None
    updated = await conn.fetchrow(SQL["set_controls"], row["id"], ordering, per_second, burst)
    if ordering != row["ordering"]:
        await conn.execute(SQL["reorder_queue"], row["id"])
    return updated


async def set_paused(conn: asyncpg.Connection, account_id: int, callback_id: str, paused: bool) -> asyncpg.Record:
    """Pause (nothing is claimed for it; its deliveries wait in the queue) or resume (what waited is due
    at once). Resuming leaves a failing callback's probe pause alone: it is not a manual pause."""
    cb = ids.decode("cb", callback_id, "callback")
    row = await conn.fetchrow(SQL["pause_callback" if paused else "resume_callback"], cb, account_id)
    if row is None:  # not paused (resume), or no such callback
        return await get_callback(conn, account_id, callback_id)
    if not paused:
        await conn.execute(SQL["notify_deliveries"])
    return row


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


async def _replace_key(conn: asyncpg.Connection, keyring: Keyring, callback_id: int, key: str, grace: float) -> None:
    """`key` signs from now on; the keys live until now keep signing for `grace` seconds."""
    async with conn.transaction():
        await conn.execute(SQL["expire_secrets"], callback_id, grace)
        await conn.execute(SQL["add_secret"], callback_id, keyring.encrypt(key))
        await conn.execute(SQL["bump_secrets_version"], callback_id)


async def rotate_secret(
    conn: asyncpg.Connection, keyring: Keyring, account_id: int, callback_id: str, grace: float
) -> NewKey:
    """A new key of the callback's scheme: a v1 secret is shown this once, a v1a key by its public key."""
    row = await get_callback(conn, account_id, callback_id)
    key = _new_key(row["signature"])
    await _replace_key(conn, keyring, row["id"], key, grace)
    return _shown(key)


async def switch_signature(
    conn: asyncpg.Connection, keyring: Keyring, row: asyncpg.Record, signature: str | None, grace: float
) -> tuple[asyncpg.Record, NewKey | None]:
    """PATCH signature (after update_callback, which checked it against the format): another scheme needs
    a key of its kind (an HMAC secret is no ed25519 key), so a switch makes one. The old key keeps signing
    for the rotation grace period, beside it in the same header, so receivers move over without a gap."""
    if signature is None or signature == row["signature"]:
        return row, None
    key = _new_key(signature)
    await _replace_key(conn, keyring, row["id"], key, grace)
    row = await conn.fetchrow(SQL["set_signature"], row["id"], signature)
    return row, _shown(key)


# Sample data a test event carries beside {"test": true}: what a real event of its type must have.
TEST_DATA: dict[str, dict[str, Any]] = {
    "bounced": {"bounceType": "hard", "smtpCode": 550, "reason": "sample bounce: mailbox does not exist"},
    "clicked": {"url": "https://example.com/", "userAgent": "sample"},
    "opened": {"userAgent": "sample"},
    "failed": {"reason": "sample failure"},
}


async def send_test_event(conn: asyncpg.Connection, account_id: int, callback_id: str, type_: str) -> asyncpg.Record:
    """A signed sample event for this callback alone, sent right away and recorded like any delivery
    (its data says {"test": true}); returns the event's row with delivery_id."""
    row = await get_callback(conn, account_id, callback_id)
    if row["status"] == "pending_verification":
        raise Conflict("verify the callback before sending it a test event", field="callbackId")
    data = {"test": True, **TEST_DATA.get(type_, {})}
    key = "test_" + secrets.token_urlsafe(12)
    return await events.record_test_event(
        conn, account_id, row["id"], type_=type_, message_key=key, recipient="test@example.com", data=data
    )


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
    path = compile_filter(filters)
    callback = await get_callback(conn, account_id, callback_id)
    try:
        return await conn.fetchrow(
            SQL["create_subscription"], account_id, callback["id"], name, event_types, filters, status, path
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
    filters = changes.get("filters")
    path = compile_filter(filters) if filters is not None else None
    try:
        row = await conn.fetchrow(
            SQL["update_subscription"], sid, account_id, changes.get("name"), changes.get("eventTypes"),
            filters, changes.get("status"), path,
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
