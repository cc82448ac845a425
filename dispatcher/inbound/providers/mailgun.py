"""Mailgun's webhooks (the JSON format): one event per request, `{"signature": {...}, "event-data": {...}}`.
The signature is in the body: HMAC-SHA256 (hex) of timestamp + token with the HTTP webhook signing key.
A token is good once (the core refuses a second use as a replay), the timestamp must be fresh."""

from __future__ import annotations

import hashlib
import hmac
import re
from email.utils import parseaddr
from typing import Annotated, Any, ClassVar

from pydantic import Field

from dispatcher.inbound.adapter import (
    Fetch,
    ProviderEvent,
    Received,
    Refused,
    Request,
    SourceConfig,
    Unreadable,
    check_timestamp,
    digest,
    same,
    smtp_code,
    unix_time,
)

_ENHANCED = re.compile(r"\b[245]\.\d{1,3}\.\d{1,3}\b")


class MailgunConfig(SourceConfig):
    signingKey: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="The HTTP webhook signing key, from the Mailgun dashboard (Sending > Webhooks, "
        "or Settings > API Security). Secret: stored encrypted, never shown again"
    )


# Mailgun event → our type. `failed` is decided by its severity and reason (see `_failed`).
TYPES: dict[str, str | None] = {
    "accepted": "sent",
    "rejected": "failed",
    "delivered": "delivered",
    "failed": "bounced",
    "opened": "opened",
    "clicked": "clicked",
    "unsubscribed": "unsubscribed",
    "complained": "complained",
    "stored": None,
    "list_member_uploaded": None,
    "list_member_upload_error": None,
    "list_uploaded": None,
}
# Permanent failures where Mailgun never reached the recipient's server: it dropped the message.
DROPPED = {
    "suppress-bounce": "not sent: the address bounced before (Mailgun suppression list)",
    "suppress-unsubscribe": "not sent: the recipient unsubscribed before (Mailgun suppression list)",
    "suppress-complaint": "not sent: the recipient complained before (Mailgun suppression list)",
    "old": "not delivered: Mailgun's retries ran out",
}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _key(value: Any) -> str | None:
    """A user variable as text: X-Mailgun-Variables is JSON, so a key may arrive as a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return _text(value)


def _failed(raw: dict[str, Any], status: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A `failed` event: temporary → deferred (Mailgun retries); permanent → bounced hard, or failed
    when Mailgun dropped the message without a final answer from the recipient's server."""
    severity, reason = _text(raw.get("severity")) or "permanent", _text(raw.get("reason")) or ""
    answer = _text(status.get("message")) or _text(status.get("description"))
    code = smtp_code(status.get("code")) or smtp_code(answer)
    enhanced = _text(status.get("enhanced-code"))
    if enhanced is None and answer and (found := _ENHANCED.search(answer)):
        enhanced = found.group()
    if severity == "temporary":
        return "deferred", {"reason": answer, "smtpCode": code, "status": enhanced, "attempt": status.get("attempt-no")}
    if reason in DROPPED:
        detail = _text(status.get("description")) or _text(status.get("message"))
        return "failed", {"reason": f"{DROPPED[reason]}: {detail}" if detail else DROPPED[reason], "smtpCode": code}
    return "bounced", {"bounceType": "hard", "smtpCode": code, "reason": answer, "status": enhanced}


def _recipient(raw: dict[str, Any], headers: dict[str, Any]) -> str | None:
    if recipient := _text(raw.get("recipient")):
        return recipient
    to = _text(headers.get("to"))  # `rejected` names no recipient: its To header does
    return (parseaddr(to)[1] or None) if to else None


def _event_id(raw: dict[str, Any]) -> str:
    """Mailgun's event id is unique within a day: with the event's UTC date it is unique for good, and a
    retry (the same event, signed again) has the same id and timestamp."""
    event_id, when = _text(raw.get("id")), unix_time(raw.get("timestamp"))
    if event_id is None:
        return digest(raw)
    return f"{when.date().isoformat()}/{event_id}" if when else event_id


def translate(raw: Any) -> ProviderEvent:
    if not isinstance(raw, dict):
        raise Unreadable("a Mailgun webhook's event-data must be a JSON object")
    raw_type = str(raw.get("event", ""))
    type_ = TYPES.get(raw_type)
    headers = _dict(_dict(raw.get("message")).get("headers"))
    status = _dict(raw.get("delivery-status"))
    data: dict[str, Any] = {}
    classification = None
    if raw_type == "failed":
        type_, data = _failed(raw, status)
        classification = "/".join(x for x in (_text(raw.get("severity")), _text(raw.get("reason"))) if x) or None
    elif type_ == "failed":  # rejected: Mailgun refused the request to send
        reject = _dict(raw.get("reject"))
        data = {"reason": _text(reject.get("reason")) or _text(reject.get("description")) or "rejected by Mailgun"}
    elif type_ == "delivered":
        data = {"response": _text(status.get("message")), "smtpCode": smtp_code(status.get("code"))}
    elif type_ in ("opened", "clicked"):
        data = {"userAgent": _text(_dict(raw.get("client-info")).get("user-agent")), "ipAddress": _text(raw.get("ip"))}
        if type_ == "clicked":
            data["url"] = _text(raw.get("url")) or "about:blank"
    message_id = _text(headers.get("message-id"))  # Mailgun's message id is the RFC Message-ID
    return ProviderEvent(
        type=type_,
        raw_type=raw_type,
        event_id=_event_id(raw),
        raw=raw,
        message_id=message_id.strip().strip("<>") if message_id else None,
        smtp_message_id=message_id,
        message_key=_key(_dict(raw.get("user-variables")).get("messageKey")),
        recipient=_recipient(raw, headers),
        occurred_at=unix_time(raw.get("timestamp")),
        data=data,
        classification=classification,
    )


class Mailgun:
    provider: ClassVar[str] = "mailgun"
    config_model: ClassVar[type[SourceConfig]] = MailgunConfig
    secrets: ClassVar[tuple[str, ...]] = ("signingKey",)

    async def receive(self, request: Request, fetch: Fetch) -> Received:
        try:
            body = request.json()
        except Unreadable:
            body = None
        signature = _dict(body.get("signature")) if isinstance(body, dict) else {}
        timestamp, token, signed = (signature.get(k) for k in ("timestamp", "token", "signature"))
        if not (isinstance(timestamp, str | int) and _text(token) and _text(signed)):
            raise Refused("missing_auth", "the body's signature block (timestamp, token, signature) is required")
        check_timestamp(request, timestamp)
        key = str(request.config["signingKey"]).encode()
        expected = hmac.new(key, f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
        parent = signature.get("parent-signature")  # a subaccount's event, signed also with the primary's key
        ok = same(expected, str(signed).lower())
        ok_parent = isinstance(parent, str) and same(expected, parent)
        if not (ok or ok_parent):
            raise Refused("invalid_signature", "the HMAC signature does not match the signing key")
        assert isinstance(body, dict)
        if "event-data" not in body:
            raise Unreadable("a Mailgun webhook body has an event-data object")
        return Received(events=[translate(body["event-data"])], nonce=str(token))
