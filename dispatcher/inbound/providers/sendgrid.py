"""SendGrid's Event Webhook: a JSON array of events, signed with ECDSA P-256 (SHA-256) over the timestamp
header followed by the raw body; the verification key is the base64 DER public key SendGrid shows."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
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
    digest,
    smtp_code,
    unix_time,
)

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


def _public_key(value: str) -> str:
    try:
        key = load_der_public_key(base64.b64decode(value, validate=True))
    except (ValueError, binascii.Error):
        raise ValueError("must be the base64 DER public key SendGrid shows for the signed Event Webhook") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("must be an ECDSA public key")
    return value


class SendGridConfig(SourceConfig):
    publicKey: Annotated[
        str,
        Field(min_length=1, max_length=1000, json_schema_extra={"format": "ecdsa-public-key"}),
        AfterValidator(_public_key),
    ] = Field(
        description="The Event Webhook's verification key (base64 DER), from Mail Settings > Signed Event Webhook"
    )


# SendGrid event → our type; bounce is decided by its `type` (bounce: hard, blocked: soft).
TYPES: dict[str, str | None] = {
    "processed": "sent",
    "dropped": "failed",
    "deferred": "deferred",
    "delivered": "delivered",
    "bounce": "bounced",
    "blocked": "bounced",
    "open": "opened",
    "click": "clicked",
    "spamreport": "complained",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
    "group_resubscribe": None,
}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def translate(raw: Any) -> ProviderEvent:
    if not isinstance(raw, dict):
        raise Unreadable("each SendGrid event must be a JSON object")
    raw_type = str(raw.get("event", ""))
    type_ = TYPES.get(raw_type)
    sg_message_id = _text(raw.get("sg_message_id"))
    data: dict[str, Any] = {}
    classification = _text(raw.get("bounce_classification"))
    if type_ == "bounced":
        hard = raw_type == "bounce" and raw.get("type", "bounce") == "bounce"
        reason = _text(raw.get("reason"))
        data = {"bounceType": "hard" if hard else "soft", "smtpCode": smtp_code(reason) or smtp_code(raw.get("status")),
                "reason": reason, "status": _text(raw.get("status"))}  # fmt: skip
    elif type_ == "failed":
        data = {"reason": _text(raw.get("reason")) or "dropped by SendGrid"}
    elif type_ == "deferred":
        response = _text(raw.get("response"))
        data = {"reason": response, "smtpCode": smtp_code(response), "attempt": raw.get("attempt")}
    elif type_ == "delivered":
        data = {"response": _text(raw.get("response"))}
    elif type_ in ("opened", "clicked"):
        data = {"userAgent": _text(raw.get("useragent")), "ipAddress": _text(raw.get("ip"))}
        if type_ == "clicked":
            data["url"] = _text(raw.get("url")) or "about:blank"
    return ProviderEvent(
        type=type_,
        raw_type=raw_type,
        event_id=_text(raw.get("sg_event_id")) or digest(raw),
        raw=raw,
        # The API's X-Message-Id is the part before the first dot of sg_message_id.
        message_id=sg_message_id.split(".", 1)[0] if sg_message_id else None,
        smtp_message_id=_text(raw.get("smtp-id")),
        message_key=_text(raw.get("messageKey")),  # a custom argument: top-level in every event
        recipient=_text(raw.get("email")),
        occurred_at=unix_time(raw.get("timestamp")),
        data=data,
        classification=classification,
    )


class SendGrid:
    provider: ClassVar[str] = "sendgrid"
    config_model: ClassVar[type[SourceConfig]] = SendGridConfig
    secrets: ClassVar[tuple[str, ...]] = ()  # a public key

    async def receive(self, request: Request, fetch: Fetch) -> Received:
        signature, timestamp = request.headers.get(SIGNATURE), request.headers.get(TIMESTAMP)
        if not signature or not timestamp:
            raise Refused("missing_auth", f"the {SIGNATURE} and {TIMESTAMP} headers are required")
        check_timestamp(request, timestamp)
        key = load_der_public_key(base64.b64decode(request.config["publicKey"]))
        assert isinstance(key, ec.EllipticCurvePublicKey)
        try:
            key.verify(base64.b64decode(signature), timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, binascii.Error):
            raise Refused("invalid_signature", "the ECDSA signature does not match the body") from None
        body = request.json()
        if not isinstance(body, list):
            raise Unreadable("a SendGrid Event Webhook body is a JSON array of events")
        return Received(events=[translate(raw) for raw in body])
