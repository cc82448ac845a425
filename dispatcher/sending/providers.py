"""The header each mail provider echoes back in its events, so that mail sent through its SMTP relay
carries the messageKey to the provider and back (DISPATCHER_MAIL_PROVIDER). The provider adapters in
dispatcher/inbound/providers read the same field on the way in."""

from __future__ import annotations

import base64
import re

import orjson

PROVIDERS = ("ses", "sendgrid", "mailgun", "postmark", "sparkpost", "brevo", "resend")
_SES_TAG_VALUE = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what SES accepts in a message tag's value


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def message_key_headers(provider: str | None, message_key: str) -> dict[str, str]:
    """Headers that make `provider` echo `message_key` in its events; none for no provider. A key SES
    cannot hold in a tag value goes as the tag `messageKeyB64` (its UTF-8 in unpadded base64url, which
    uses only the characters SES allows), which the SES adapter reads back; one too long even so (over
    256 characters encoded) is left out, and its events are filed under the SES message id."""
    if provider == "ses":
        if _SES_TAG_VALUE.fullmatch(message_key):
            return {"X-SES-MESSAGE-TAGS": f"messageKey={message_key}"}
        encoded = base64.urlsafe_b64encode(message_key.encode()).decode().rstrip("=")
        return {"X-SES-MESSAGE-TAGS": f"messageKeyB64={encoded}"} if len(encoded) <= 256 else {}
    if provider == "sendgrid":
        return {"X-SMTPAPI": _json({"unique_args": {"messageKey": message_key}})}
    if provider == "mailgun":
        return {"X-Mailgun-Variables": _json({"messageKey": message_key})}
    if provider == "postmark":
        return {"X-PM-Metadata-messageKey": message_key}
    if provider == "sparkpost":
        return {"X-MSYS-API": _json({"metadata": {"messageKey": message_key}})}
    if provider == "brevo":
        return {"X-Mailin-custom": message_key}
    if provider == "resend":
        return {}  # Resend's SMTP relay echoes no custom header: its events are matched by Message-ID
    return {}
