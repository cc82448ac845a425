"""SparkPost's event webhooks: a JSON array of `{"msys": {"<class>_event": {...}}}`, not signed. The source
checks the webhook's HTTP basic auth credentials, or the token of its `auth_token` option, which SparkPost
sends in X-MessageSystems-Webhook-Token. A batch with an empty `msys` is SparkPost's test and carries no event."""

from __future__ import annotations

from typing import Any, ClassVar

from dispatcher.inbound.adapter import (
    Fetch,
    ProviderEvent,
    Received,
    Request,
    SourceConfig,
    Unreadable,
    digest,
    iso_time,
    unix_time,
)
from dispatcher.inbound.providers.credentials import (
    BasicOrTokenConfig,
    check_basic_or_token,
    enhanced_status,
    reply_code,
    text,
)

TOKEN = "X-MessageSystems-Webhook-Token"


class SparkPostConfig(BasicOrTokenConfig):
    """Basic auth (the webhook's Authentication: Basic Auth) or the webhook's auth_token, or both."""


TYPES: dict[str, str] = {
    "injection": "sent",
    "delivery": "delivered",
    "delay": "deferred",
    "bounce": "bounced",
    "out_of_band": "bounced",
    "policy_rejection": "failed",
    "generation_failure": "failed",
    "generation_rejection": "failed",
    "spam_complaint": "complained",
    "open": "opened",
    "initial_open": "opened",
    "amp_open": "opened",
    "amp_initial_open": "opened",
    "click": "clicked",
    "amp_click": "clicked",
    "list_unsubscribe": "unsubscribed",
    "link_unsubscribe": "unsubscribed",
}

FAILED_REASONS = {"policy_rejection": "rejected by SparkPost's policy", "generation_failure": "message generation failed",
                  "generation_rejection": "message generation rejected by SparkPost's policy"}  # fmt: skip

# SparkPost's bounce classification codes (https://support.sparkpost.com/docs/deliverability/bounce-classification-codes):
# code → (name, our reading). Hard: the address is bad. Admin failures are SparkPost's own policy (the message
# was not sent): failed. Auto-replies, subscribe requests and challenge-response probes are not bounces.
BOUNCE_CLASSES: dict[int, tuple[str, str | None]] = {
    1: ("Undetermined", "soft"),
    10: ("Invalid Recipient", "hard"),
    20: ("Soft Bounce", "soft"),
    21: ("DNS Failure", "soft"),
    22: ("Mailbox Full", "soft"),
    23: ("Too Large", "soft"),
    24: ("Timeout", "soft"),
    25: ("Admin Failure", "failed"),
    26: ("Smart Send Suppression", "failed"),
    30: ("Generic Bounce: No RCPT", "hard"),
    40: ("Generic Bounce", "soft"),
    50: ("Mail Block", "soft"),
    51: ("Spam Block", "soft"),
    52: ("Spam Content", "soft"),
    53: ("Prohibited Attachment", "soft"),
    54: ("Relaying Denied", "soft"),
    60: ("Auto-Reply", None),
    70: ("Transient Failure", "soft"),
    80: ("Subscribe", None),
    90: ("Unsubscribe", "hard"),
    100: ("Challenge-Response", None),
}


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _bounce_class(event: dict[str, Any]) -> tuple[int | None, str | None, str | None]:
    """(code, classification, reading) of the event's bounce_class; an unknown code reads as soft."""
    code = _int(event.get("bounce_class"))
    if code is None:
        return None, None, "soft"
    name, reading = BOUNCE_CLASSES.get(code, ("Unknown", "soft"))
    return code, f"{code} {name}", reading


def _occurred(value: Any) -> Any:
    return unix_time(value) if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()) \
        else iso_time(value)  # fmt: skip


def _event_id(event: dict[str, Any]) -> str:
    """SparkPost's event_id (a large integer or a UUID, as a string); digest of the event without one."""
    value = event.get("event_id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return text(value) or digest(event)


def _message_key(event: dict[str, Any]) -> str | None:
    for field in ("rcpt_meta", "metadata"):
        meta = event.get(field)
        if isinstance(meta, dict) and (key := text(meta.get("messageKey"))):
            return key
    return None


def translate(raw: dict[str, Any]) -> ProviderEvent:
    raw_type = text(raw.get("type")) or ""
    type_: str | None = TYPES.get(raw_type)
    reason = text(raw.get("raw_reason")) or text(raw.get("reason"))
    code = _int(raw.get("error_code"))
    smtp = code if code is not None and 200 <= code <= 599 else reply_code(reason)
    data: dict[str, Any] = {}
    classification = None
    if type_ == "bounced":
        _, classification, reading = _bounce_class(raw)
        if reading == "failed":
            type_, data = "failed", {"reason": reason or "failed by SparkPost's policy", "smtpCode": smtp}
        elif reading is None:
            type_ = None
        else:
            data = {"bounceType": reading, "smtpCode": smtp, "reason": reason, "status": enhanced_status(reason)}
    elif type_ == "deferred":
        _, classification, _ = _bounce_class(raw)
        data = {"reason": reason, "smtpCode": smtp, "attempt": _int(raw.get("num_retries"))}
    elif type_ == "failed":
        _, classification, _ = _bounce_class(raw)
        data = {"reason": reason or FAILED_REASONS[raw_type], "smtpCode": smtp}
    elif type_ == "complained":
        classification = text(raw.get("fbtype"))
    elif type_ in ("opened", "clicked"):
        data = {"userAgent": text(raw.get("user_agent")), "ipAddress": text(raw.get("ip_address"))}
        if type_ == "clicked":
            data["url"] = text(raw.get("target_link_url")) or "about:blank"
    return ProviderEvent(
        type=type_,
        raw_type=raw_type,
        event_id=_event_id(raw),
        raw=raw,
        message_id=text(raw.get("message_id")),
        message_key=_message_key(raw),
        recipient=text(raw.get("rcpt_to")) or text(raw.get("raw_rcpt_to")),
        occurred_at=_occurred(raw.get("timestamp")),
        data=data,
        classification=classification,
    )


def events_of(body: Any) -> list[dict[str, Any]]:
    """The event objects of a batch, in order; SparkPost's test batch (`[{"msys": {}}]`) has none."""
    if not isinstance(body, list):
        raise Unreadable("a SparkPost webhook body is a JSON array of {msys: {...}} objects")
    found = []
    for item in body:
        msys = item.get("msys") if isinstance(item, dict) else None
        if not isinstance(msys, dict):
            raise Unreadable("each SparkPost batch item must be an object with an msys object")
        for event in msys.values():
            if not isinstance(event, dict):
                raise Unreadable("each event in msys must be a JSON object")
            found.append(event)
    return found


class SparkPost:
    provider: ClassVar[str] = "sparkpost"
    config_model: ClassVar[type[SourceConfig]] = SparkPostConfig
    secrets: ClassVar[tuple[str, ...]] = ("password", "token")

    async def receive(self, request: Request, fetch: Fetch) -> Received:
        check_basic_or_token(request, request.headers.get(TOKEN), TOKEN)
        return Received(events=[translate(event) for event in events_of(request.json())])
