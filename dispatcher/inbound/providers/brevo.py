"""Brevo's transactional email webhooks: one JSON object per request, or a JSON array of them when the webhook
is created with `batched: true`. Not signed: the source checks the HTTP basic auth credentials the notify URL
carries, or the bearer token of the webhook's `auth` ({"type": "bearer", "token": ...})."""

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
    unix_time,
)
from dispatcher.inbound.providers.credentials import (
    BasicOrTokenConfig,
    authorization,
    check_basic_or_token,
    enhanced_status,
    reply_code,
    text,
)


class BrevoConfig(BasicOrTokenConfig):
    """Basic auth (username:password in the notify URL) or the webhook's bearer token, or both."""


TYPES: dict[str, str] = {
    "request": "sent",
    "delivered": "delivered",
    "deferred": "deferred",
    "hard_bounce": "bounced",
    "soft_bounce": "bounced",
    "blocked": "failed",
    "invalid_email": "failed",
    "error": "failed",
    "spam": "complained",
    "opened": "opened",
    "unique_opened": "opened",
    "proxy_open": "opened",
    "unique_proxy_open": "opened",
    "click": "clicked",
    "unsubscribed": "unsubscribed",
}

FAILED_REASONS = {"blocked": "blocked by Brevo", "invalid_email": "invalid recipient address",
                  "error": "Brevo could not send the message"}  # fmt: skip


def _occurred(raw: dict[str, Any]) -> Any:
    """ts_event (seconds, UTC), else ts_epoch (milliseconds), else ts (seconds)."""
    if (when := unix_time(raw.get("ts_event"))) is not None:
        return when
    epoch = raw.get("ts_epoch")
    if isinstance(epoch, int | float) and not isinstance(epoch, bool):
        return unix_time(epoch / 1000 if epoch > 10**11 else epoch)
    return unix_time(raw.get("ts"))


def message_key(custom: Any) -> str | None:
    """The messageKey in X-Mailin-custom: the whole value, or the `messageKey:<key>` part of a
    `name:value|name:value` list."""
    value = text(custom)
    if value is None:
        return None
    for part in value.split("|"):
        name, sep, key = part.partition(":")
        if sep and name.strip() == "messageKey" and key.strip():
            return key.strip()
    return value


def translate(raw: Any) -> ProviderEvent:
    if not isinstance(raw, dict):
        raise Unreadable("each Brevo event must be a JSON object")
    raw_type = text(raw.get("event")) or ""
    type_: str | None = TYPES.get(raw_type)
    reason = text(raw.get("reason"))
    data: dict[str, Any] = {}
    if type_ == "bounced":
        data = {"bounceType": "hard" if raw_type == "hard_bounce" else "soft", "smtpCode": reply_code(reason),
                "reason": reason, "status": enhanced_status(reason)}  # fmt: skip
    elif type_ == "deferred":
        data = {"reason": reason, "smtpCode": reply_code(reason)}
    elif type_ == "failed":
        data = {"reason": reason or FAILED_REASONS[raw_type]}
    elif type_ in ("opened", "clicked"):
        data = {"userAgent": text(raw.get("user_agent")), "ipAddress": text(raw.get("ip"))}
        if type_ == "clicked":
            data["url"] = text(raw.get("link")) or "about:blank"
    message_id = text(raw.get("message-id"))
    return ProviderEvent(
        type=type_,
        raw_type=raw_type,
        event_id=digest(raw),  # Brevo's `id` is the webhook's id, the same for all its events
        raw=raw,
        message_id=message_id,
        smtp_message_id=message_id,  # Brevo's message id is the Message-ID header it set
        message_key=message_key(raw.get("X-Mailin-custom")),
        recipient=text(raw.get("email")),
        occurred_at=_occurred(raw),
        data=data,
    )


class Brevo:
    provider: ClassVar[str] = "brevo"
    config_model: ClassVar[type[SourceConfig]] = BrevoConfig
    secrets: ClassVar[tuple[str, ...]] = ("password", "token")

    async def receive(self, request: Request, fetch: Fetch) -> Received:
        scheme, value = authorization(request)
        check_basic_or_token(request, value if scheme == "bearer" else None, "the Authorization: Bearer header")
        body = request.json()
        if isinstance(body, dict):
            body = [body]
        if not isinstance(body, list):
            raise Unreadable("a Brevo webhook body is a JSON object, or an array of them (batched)")
        return Received(events=[translate(raw) for raw in body])
