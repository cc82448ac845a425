"""A provider's request in, events out: authenticate with the source's adapter, refuse replays,
find each event's messageKey, and record through the one event path with the raw provider event kept
for audit. Exactly once per provider event: the event's client id is `<provider>:<provider event id>`,
which the events table keeps unique per account, and a request's events are recorded all or nothing."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from dispatcher import events
from dispatcher.db import queries
from dispatcher.errors import NotFound
from dispatcher.inbound import sources
from dispatcher.inbound.adapter import ProviderEvent, Received, Refused, Request
from dispatcher.inbound.providers import ADAPTERS

SQL = queries("sources")
MAX_BODY = 10 * 2**20  # bytes: providers batch up to a few MB (SendGrid, SparkPost)
CERTIFICATE_CACHE = 64  # signing certificates kept per process


@dataclass(slots=True)
class Batch:
    """One request's events, for the group writer (`record_groups`)."""

    account_id: int
    source_id: int
    events: list[events.NewEvent]
    raws: list[Any]


@dataclass(slots=True)
class Outcome:
    provider: str
    recorded: int = 0  # new events
    duplicates: int = 0  # provider events recorded before (the provider retried)
    ignored: list[str] = field(default_factory=list)  # raw types with no counterpart


class Fetcher:
    """GET for adapters (SNS signing certificates, subscription confirmations): only URLs matching the
    configured pattern, through the SSRF-guarded session; certificates are cached."""

    def __init__(self, session: aiohttp.ClientSession, pattern: str):
        self.session, self.pattern = session, re.compile(pattern)
        self.cache: dict[str, bytes] = {}

    async def __call__(self, url: str, *, cache: bool = False) -> bytes:
        if not self.pattern.match(url):
            raise Refused("untrusted_url", "the URL to fetch does not match DISPATCHER_SNS_CERT_URL_PATTERN")
        if cache and url in self.cache:
            return self.cache[url]
        try:
            async with self.session.get(url, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise Refused("fetch_failed", f"GET of the provider's URL answered {resp.status}")
                body = await resp.content.read(1 << 20)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Refused("fetch_failed", f"GET of the provider's URL failed: {type(exc).__name__}") from None
        if cache:
            if len(self.cache) >= CERTIFICATE_CACHE:
                self.cache.pop(next(iter(self.cache)))
            self.cache[url] = body
        return body


async def load_source(pool: asyncpg.Pool, public_id: str) -> asyncpg.Record:
    try:
        n = sources.ids.decode("src", public_id, "source")
    except NotFound:
        raise NotFound("no such source") from None
    row = await pool.fetchrow(SQL["source_for_ingest"], n)
    if row is None:
        raise NotFound("no such source")
    return row


async def authenticate(source: asyncpg.Record, request: Request, fetch: Fetcher) -> Received:
    """The adapter's verdict on the request (raises Refused), its events translated."""
    return await ADAPTERS[source["provider"]].receive(request, fetch)


async def remember_nonce(pool: asyncpg.Pool, source_id: int, nonce: str) -> None:
    if await pool.fetchval(SQL["remember_nonce"], source_id, nonce) is None:
        raise Refused("replay", "this signed request was received before")


async def forget_nonce(pool: asyncpg.Pool, source_id: int, nonce: str) -> None:
    await pool.execute(SQL["forget_nonce"], source_id, nonce)


def normalize_message_id(value: str | None) -> str | None:
    """A Message-ID as stored: without angle brackets or surrounding space."""
    if not value:
        return None
    value = value.strip().removeprefix("<").removesuffix(">").strip()
    return value or None


async def correlate(conn: asyncpg.Connection, account_id: int, found: Sequence[ProviderEvent]) -> list[str]:
    """Each event's messageKey, in this order: the messageKey the mail carried (tag, custom argument,
    metadata); the message dispatcher sent with the Message-ID the provider echoes; the provider's own
    message id; the provider's event id."""
    wanted = {m for e in found if not e.message_key and (m := normalize_message_id(e.smtp_message_id))}
    known: dict[str, str] = {}
    if wanted:
        rows = await conn.fetch(SQL["keys_by_mail_message_id"], account_id, sorted(wanted))
        known = {r["mail_message_id"]: r["message_key"] for r in rows}
    keys = []
    for e in found:
        key = e.message_key or known.get(normalize_message_id(e.smtp_message_id) or "") or e.message_id or e.event_id
        keys.append(key[:1000])
    return keys


def storable(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000: a provider's value keeps everything else."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def to_events(source: asyncpg.Record, found: Sequence[ProviderEvent], keys: Sequence[str]) -> list[events.NewEvent]:
    """Our events for the provider's, each with `data.provider` saying where it came from."""
    provider, out = source["provider"], []
    for e, key in zip(found, keys, strict=True):
        assert e.type is not None
        about = {"name": provider, "sourceId": sources.source_id(source["id"]), "eventId": e.event_id,
                 "messageId": e.message_id, "rawType": e.raw_type}  # fmt: skip
        if e.classification:
            about["classification"] = e.classification
        if e.smtp_message_id:
            about["smtpMessageId"] = normalize_message_id(e.smtp_message_id)
        data = {k: v for k, v in e.data.items() if v is not None}
        out.append(events.NewEvent(
            type=e.type, message_key=key, data=storable({**data, "provider": about}),
            client_id=f"{provider}:{e.event_id}"[:200], occurred_at=e.occurred_at,
            recipient=e.recipient[:320] if e.recipient else None,
        ))  # fmt: skip
    return out


async def record_groups(conn: asyncpg.Connection, batches: Sequence[Batch]) -> list[tuple[list[asyncpg.Record], int]]:
    """The group writer's function: every batch's events through the one event path, then the raw
    provider events beside them, in the caller's transaction."""
    results = await events.record_groups(conn, [(b.account_id, b.events) for b in batches])
    ids_, accounts, source_ids, raws = [], [], [], []
    for b, (rows, _) in zip(batches, results, strict=True):
        for row, raw in zip(rows, b.raws, strict=True):
            ids_.append(row["id"])
            accounts.append(b.account_id)
            source_ids.append(b.source_id)
            raws.append(raw)
    if ids_:
        await conn.execute(SQL["record_receipts"], ids_, accounts, source_ids, raws)
    return results
