"""Postmark's webhooks: one JSON object per request, its kind in `RecordType`. Postmark does not sign them;
the source checks the HTTP basic auth credentials the webhook URL carries (https://user:password@host/...)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from dispatcher.inbound.adapter import (
    Fetch,
    ProviderEvent,
    Received,
    Request,
    SourceConfig,
    Unreadable,
    check_basic_auth,
    digest,
    iso_time,
)
from dispatcher.inbound.providers.credentials import Password, Username, enhanced_status, reply_code, text


class PostmarkConfig(SourceConfig):
    username: Username = Field(description="The HTTP basic auth username in the webhook URL")
    password: Password = Field(description="The HTTP basic auth password in the webhook URL (secret)")


# A Bounce record's `Type` → (our type, bounceType). Postmark's bounce types
# (https://postmarkapp.com/developer/api/bounce-api#bounce-types); a type missing here is a soft bounce.
BOUNCE_TYPES: dict[str, tuple[str | None, str | None]] = {
    "HardBounce": ("bounced", "hard"),
    "BadEmailAddress": ("bounced", "hard"),
    "Transient": ("bounced", "soft"),
    "SoftBounce": ("bounced", "soft"),
    "DnsError": ("bounced", "soft"),
    "Unknown": ("bounced", "soft"),
    "SpamNotification": ("bounced", "soft"),
    "VirusNotification": ("bounced", "soft"),
    "Blocked": ("bounced", "soft"),
    "DMARCPolicy": ("bounced", "soft"),
    "SpamComplaint": ("complained", None),
    "Unsubscribe": ("unsubscribed", None),
    "ManuallyDeactivated": ("failed", None),
    "Unconfirmed": ("failed", None),
    "SMTPApiError": ("failed", None),
    "TemplateRenderingFailed": ("failed", None),
    # Replies and notices that are not about delivering the message.
    "AutoResponder": (None, None),
    "AddressChange": (None, None),
    "Subscribe": (None, None),
    "ChallengeVerification": (None, None),
    "OpenRelayTest": (None, None),
    "InboundError": (None, None),
}

SIMPLE_TYPES: dict[str, str] = {"Delivery": "delivered", "SpamComplaint": "complained", "Open": "opened",
                                "Click": "clicked"}  # fmt: skip


def _bounce(raw: dict[str, Any]) -> tuple[str | None, str, dict[str, Any], str | None]:
    """(our type, raw type, data, classification) of a Bounce or SpamComplaint record."""
    kind = text(raw.get("Type")) or "Unknown"
    if raw.get("RecordType") == "SpamComplaint":
        return "complained", "SpamComplaint", {}, kind
    type_, bounce_type = BOUNCE_TYPES.get(kind, ("bounced", "soft"))
    details, description = text(raw.get("Details")), text(raw.get("Description"))
    data: dict[str, Any] = {}
    if type_ == "bounced":
        data = {"bounceType": bounce_type, "smtpCode": reply_code(details), "reason": details or description,
                "status": enhanced_status(details)}  # fmt: skip
    elif type_ == "failed":
        data = {"reason": details or description or kind}
    return type_, "Bounce", data, kind


def _client(raw: dict[str, Any]) -> dict[str, Any]:
    geo = raw.get("Geo")
    return {
        "userAgent": text(raw.get("UserAgent")),
        "ipAddress": text(geo.get("IP")) if isinstance(geo, dict) else None,
    }


def translate(raw: Any) -> ProviderEvent:
    if not isinstance(raw, dict):
        raise Unreadable("a Postmark webhook body is a JSON object")
    record = text(raw.get("RecordType")) or ""
    type_: str | None = SIMPLE_TYPES.get(record)
    raw_type, classification = record, None
    data: dict[str, Any] = {}
    recipient = text(raw.get("Recipient"))
    occurred = raw.get("ReceivedAt")
    if record in ("Bounce", "SpamComplaint"):
        type_, raw_type, data, classification = _bounce(raw)
        recipient, occurred = text(raw.get("Email")), raw.get("BouncedAt")
    elif record == "Delivery":
        data, occurred = {"response": text(raw.get("Details"))}, raw.get("DeliveredAt")
    elif record == "Open":
        data = {**_client(raw), "firstOpen": raw.get("FirstOpen")}
    elif record == "Click":
        data = {**_client(raw), "url": text(raw.get("OriginalLink")) or "about:blank"}
    elif record == "SubscriptionChange":
        # Suppressions for a hard bounce or a spam complaint come as their own Bounce / SpamComplaint records.
        reason = text(raw.get("SuppressionReason")) or "ManualSuppression"
        manual = raw.get("SuppressSending") is True and reason == "ManualSuppression"
        type_, occurred = ("unsubscribed" if manual else None), raw.get("ChangedAt")
        classification = f"{text(raw.get('Origin')) or 'Unknown'}/{reason}" if manual else None
    bounce_id = raw.get("ID") if record in ("Bounce", "SpamComplaint") else None
    metadata = raw.get("Metadata")
    return ProviderEvent(
        type=type_,
        raw_type=raw_type,
        event_id=str(bounce_id) if isinstance(bounce_id, int | str) and bounce_id != "" else digest(raw),
        raw=raw,
        message_id=text(raw.get("MessageID")),
        message_key=text(metadata.get("messageKey")) if isinstance(metadata, dict) else None,
        recipient=recipient,
        occurred_at=iso_time(occurred),
        data=data,
        classification=classification,
    )


class Postmark:
    provider: ClassVar[str] = "postmark"
    config_model: ClassVar[type[SourceConfig]] = PostmarkConfig
    secrets: ClassVar[tuple[str, ...]] = ("password",)

    async def receive(self, request: Request, fetch: Fetch) -> Received:
        check_basic_auth(request, request.config.get("username"), request.config.get("password"))
        return Received(events=[translate(request.json())])
