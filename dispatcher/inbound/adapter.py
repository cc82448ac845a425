"""What every provider adapter is: a config model, an authenticity check as the provider documents it,
and a translation of the provider's events into our vocabulary. Adapters are pure translations at the
edge: they never touch the database. dispatcher/inbound/ingest.py does the rest (replay, correlation,
exactly-once recording through the one event path)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import orjson
from pydantic import BaseModel, ConfigDict


class Refused(Exception):
    """The request is not authentic (missing or wrong credentials, bad signature, stale, replayed).
    `reason` is a short fixed label for metrics and logs; it never contains a secret."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


class Unreadable(Exception):
    """An authentic request whose body is not what the provider sends (answered 400)."""


class SourceConfig(BaseModel):
    """A provider's `config`. Secret fields are named in the adapter's `secrets`; they are encrypted at rest
    and never shown again."""

    model_config = ConfigDict(extra="forbid", strict=True)


@dataclass(frozen=True, slots=True)
class Request:
    """The HTTP request as the provider made it."""

    headers: Mapping[str, str]  # case-insensitive (aiohttp's CIMultiDictProxy)
    body: bytes
    config: dict[str, Any]  # the source's config, secrets decrypted
    received_at: float = field(default_factory=time.time)  # unix seconds
    tolerance: float = 300.0  # seconds a signed timestamp may differ from received_at

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise Unreadable(f"body is not valid JSON: {exc}") from None


class Fetch(Protocol):
    """GET of a URL the deployment allows (DISPATCHER_SNS_CERT_URL_PATTERN): its body, or Refused."""

    async def __call__(self, url: str, *, cache: bool = False) -> bytes: ...


@dataclass(slots=True)
class ProviderEvent:
    """One provider event, translated. `type` None: no counterpart in our vocabulary (counted, not recorded)."""

    type: str | None
    raw_type: str  # the provider's own name for it, e.g. "Bounce" or "spamreport"
    event_id: str  # the provider's event id; digest(raw) where the provider has none
    raw: Any  # the event as received, kept for audit
    message_id: str | None = None  # the provider's message id
    smtp_message_id: str | None = None  # the RFC 5322 Message-ID the provider echoes, if any
    message_key: str | None = None  # the messageKey tag / custom arg / metadata, if set
    recipient: str | None = None
    occurred_at: datetime | None = None
    data: dict[str, Any] = field(default_factory=dict)  # bounceType, smtpCode, reason, url, userAgent, ipAddress
    classification: str | None = None  # the provider's finer grouping, e.g. "Permanent/General" or "Invalid Address"


@dataclass(slots=True)
class Received:
    events: list[ProviderEvent] = field(default_factory=list)
    nonce: str | None = None  # a value that must never be accepted twice (Mailgun's token)


class Adapter(Protocol):
    provider: ClassVar[str]
    config_model: ClassVar[type[SourceConfig]]
    secrets: ClassVar[tuple[str, ...]]  # config fields encrypted at rest and never shown

    async def receive(self, request: Request, fetch: Fetch) -> Received:
        """Authenticate (raise Refused), then translate (raise Unreadable for a body of the wrong shape)."""
        ...


# --- helpers the adapters share -----------------------------------------------------------------


def digest(raw: Any) -> str:
    """An event id for a provider that sends none: the digest of the event's canonical JSON."""
    return "sha256:" + hashlib.sha256(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def same(a: str | bytes, b: str | bytes) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(a.encode() if isinstance(a, str) else a, b.encode() if isinstance(b, str) else b)


def check_basic_auth(request: Request, username: str | None, password: str | None) -> None:
    """HTTP basic auth against the configured pair (both None: not configured, refused)."""
    if username is None or password is None:
        raise Refused("not_configured", "this source has no credentials configured")
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise Refused("missing_auth", "basic authentication is required")
    try:
        user, sep, pw = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise Refused("invalid_auth", "the basic credentials are malformed") from None
    ok_user, ok_pw = same(user, username), same(pw, password)
    if not (sep and ok_user and ok_pw):
        raise Refused("invalid_auth", "the basic credentials are wrong")


def check_timestamp(request: Request, timestamp: str | int | float | None) -> None:
    """A signed timestamp (unix seconds) within the tolerance of now."""
    try:
        ts = float(timestamp)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise Refused("missing_auth", "the signature timestamp is missing or not a number") from None
    if abs(request.received_at - ts) > request.tolerance:
        raise Refused("stale", "the signature timestamp is too old or in the future")


def unix_time(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def iso_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def smtp_code(text: Any) -> int | None:
    """The first three-digit SMTP reply code in a diagnostic ("smtp; 550 5.1.1 user unknown" → 550)."""
    if isinstance(text, int) and 200 <= text <= 599:
        return text
    if not isinstance(text, str):
        return None
    for word in text.replace("-", " ").replace(";", " ").split():
        if len(word) == 3 and word.isdigit() and word[0] in "2345":
            return int(word)
    return None
