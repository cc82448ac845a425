"""Resend's webhooks, sent through Svix as the Standard Webhooks specification describes: one event per
request, signed with HMAC-SHA256 over "{svix-id}.{svix-timestamp}.{body}", the key being the base64 part
of the endpoint's "whsec_..." signing secret. `svix-id` stays the same when Svix retries a message, so it
is the event id: a retry is recorded once."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field

from dispatcher.inbound.adapter import (
    Fetch,
    ProviderEvent,
    Received,
    Refused,
    Request,
    SourceConfig,
    Unreadable,
    check_timestamp,
    iso_time,
    same,
    smtp_code,
)
from dispatcher.inputs import Omittable

PREFIX = "whsec_"
_B64 = "[A-Za-z0-9+/]"
SECRET_PATTERN = f"^whsec_(?:{_B64}{{4}})*(?:{_B64}{{4}}|{_B64}{{2}}(?:==)?|{_B64}{{3}}=?)$"  # padding optional
_ENHANCED = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")


def _secret_key(value: str) -> bytes:
    """The HMAC key: the base64 after "whsec_" (padding optional, as the Standard Webhooks libraries read it)."""
    encoded = value.removeprefix(PREFIX)
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)


def _signing_secret(value: str) -> str:
    try:
        key = _secret_key(value)
    except (ValueError, binascii.Error):
        raise ValueError('must be the webhook\'s signing secret as Resend shows it: "whsec_" and base64') from None
    if not value.startswith(PREFIX) or not key:
        raise ValueError('must be the webhook\'s signing secret as Resend shows it: "whsec_" and base64')
    return value


class ResendConfig(SourceConfig):
    signingSecret: Omittable[
        Annotated[
            str,
            Field(min_length=7, max_length=200, pattern=SECRET_PATTERN),
            AfterValidator(_signing_secret),
        ]
    ] = Field(
        None,
        description='The webhook\'s signing secret ("whsec_..."), from the Resend dashboard: Webhooks > the '
        "endpoint > Signing Secret. Resend shows it once the endpoint (the source's url) exists, so it may be "
        "set later with PATCH; until then every request is refused. Secret: stored encrypted, never shown again",
    )


# Resend event type → our type; anything else (email.scheduled, email.received, contact.*, domain.*, ...) is ignored.
TYPES: dict[str, str | None] = {
    "email.sent": "sent",
    "email.delivered": "delivered",
    "email.delivery_delayed": "deferred",
    "email.bounced": "bounced",
    "email.complained": "complained",
    "email.opened": "opened",
    "email.clicked": "clicked",
    "email.failed": "failed",
    "email.suppressed": "failed",
    "email.scheduled": None,
    "email.received": None,
}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tag(tags: Any, name: str) -> str | None:
    """A tag's value: Resend's payloads show tags as an object ({"name": "value"}); a list of
    {"name", "value"} (the shape the send API takes) is read too."""
    if isinstance(tags, dict):
        return _text(tags.get(name))
    if isinstance(tags, list):
        for tag in tags:
            if isinstance(tag, dict) and tag.get("name") == name:
                return _text(tag.get("value"))
    return None


def _bounce(bounce: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """email.bounced is a permanent rejection (Resend's words); only a Transient bounce is soft."""
    kind, sub = _text(bounce.get("type")), _text(bounce.get("subType"))
    codes = bounce.get("diagnosticCode")
    diagnostic = next((c for c in codes if _text(c)), None) if isinstance(codes, list) else _text(codes)
    found = _ENHANCED.search(diagnostic or "")
    data = {
        "bounceType": "soft" if kind == "Transient" else "hard",
        "smtpCode": smtp_code(diagnostic),
        "reason": _text(bounce.get("message")) or diagnostic,
        "status": found.group() if found else None,
    }
    return data, "/".join(x for x in (kind, sub) if x) or None


def translate(raw: Any, event_id: str) -> ProviderEvent:
    if not isinstance(raw, dict) or not isinstance(raw.get("data", {}), dict):
        raise Unreadable("a Resend webhook body is a JSON object with type, created_at and a data object")
    raw_type = str(raw.get("type", ""))
    type_ = TYPES.get(raw_type)
    event = _dict(raw.get("data"))
    data: dict[str, Any] = {}
    classification = None
    occurred_at = iso_time(raw.get("created_at"))
    if raw_type == "email.bounced":
        data, classification = _bounce(_dict(event.get("bounce")))
    elif raw_type == "email.failed":
        data = {"reason": _text(_dict(event.get("failed")).get("reason")) or "Resend could not send the email"}
    elif raw_type == "email.suppressed":
        suppressed = _dict(event.get("suppressed"))
        data = {"reason": _text(suppressed.get("message")) or "not sent: the address is on a suppression list"}
        classification = _text(suppressed.get("type"))
    elif raw_type == "email.clicked":
        click = _dict(event.get("click"))
        data = {"url": _text(click.get("link")) or "about:blank", "userAgent": _text(click.get("userAgent")),
                "ipAddress": _text(click.get("ipAddress"))}  # fmt: skip
        occurred_at = iso_time(click.get("timestamp")) or occurred_at
    to = event.get("to")
    recipients = [t for t in to if _text(t)] if isinstance(to, list) else [to] if _text(to) else []
    return ProviderEvent(
        type=type_,
        raw_type=raw_type,
        event_id=event_id,
        raw=raw,
        message_id=_text(event.get("email_id")),
        smtp_message_id=_text(event.get("message_id")),  # the RFC Message-ID, in every email.* event
        message_key=_tag(event.get("tags"), "messageKey"),
        recipient=recipients[0] if len(recipients) == 1 else None,  # one email, several recipients: none
        occurred_at=occurred_at,
        data=data,
        classification=classification,
    )


def _header(request: Request, name: str) -> str | None:
    """svix-* as Resend sends them; webhook-* as the Standard Webhooks specification names them."""
    return request.headers.get(f"svix-{name}") or request.headers.get(f"webhook-{name}")


class Resend:
    provider: ClassVar[str] = "resend"
    config_model: ClassVar[type[SourceConfig]] = ResendConfig
    secrets: ClassVar[tuple[str, ...]] = ("signingSecret",)

    async def receive(self, request: Request, fetch: Fetch) -> Received:
        secret = request.config.get("signingSecret")
        if not secret:
            raise Refused("not_configured", "this source has no signing secret yet: set config.signingSecret")
        msg_id, timestamp, signatures = (
            _header(request, "id"),
            _header(request, "timestamp"),
            _header(request, "signature"),
        )
        if not msg_id or not timestamp or not signatures:
            raise Refused("missing_auth", "the svix-id, svix-timestamp and svix-signature headers are required")
        check_timestamp(request, timestamp)
        key = _secret_key(str(secret))
        signed = f"{msg_id}.{timestamp}.".encode() + request.body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        # Space separated "v1,<base64>" entries (several while a secret rotates); other versions are not HMAC.
        offered = [sig for version, _, sig in (s.partition(",") for s in signatures.split()) if version == "v1"]
        if not any([same(expected, sig) for sig in offered]):
            raise Refused("invalid_signature", "no v1 signature matches the signing secret")
        return Received(events=[translate(request.json(), msg_id)])
