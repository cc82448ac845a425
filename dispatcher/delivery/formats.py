"""A callback's format: how its requests' bodies are built and signed. One formatter per format; the
worker calls `request` and does not branch on formats anywhere else.

- `standard`: Standard Webhooks. One event per request, or a JSON array for a batching callback;
  `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`
  keyed by the base64 after `whsec_` of each live secret, or `v1a,<base64 ed25519 signature>` by each
  live `whsk_` key of a v1a callback (only this format signs v1a: the API refuses v1a with the others).
- `ens`: Marketing Cloud's Event Notification Service. Always a JSON array of ENS events;
  `x-sfmc-ens-signature: <base64 HMAC-SHA256 of the body>` keyed by the callback's signatureKey (the
  text after `whsec_`, as `POST /platform/v1/ens-callbacks` shows it).
- `customerio`: Customer.io reporting webhooks. One event object per request (a batching callback
  sends an array); `X-CIO-Timestamp`, `X-CIO-Signature: <hex HMAC-SHA256 of "v0:<timestamp>:<body>">`
  keyed by the signing secret as shown.

Every format signs with the newest live secret first; `standard` lists every live secret's signature,
so a receiver keeps verifying through a rotation.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from dispatcher import ids
from dispatcher.crypto import SECRET_PREFIX
from dispatcher.delivery import payload, signing

FORMATS = ("standard", "ens", "customerio")

# Our event types as ENS event categories; a type ENS has no category for keeps its own name.
ENS_CATEGORIES = {
    "sent": "TransactionalSendEvents.EmailSent",
    "failed": "TransactionalSendEvents.EmailNotSent",
    "bounced": "TransactionalSendEvents.EmailBounced",
    "opened": "EngagementEvents.EmailOpen",
    "clicked": "EngagementEvents.EmailClick",
    "unsubscribed": "EngagementEvents.EmailUnsubscribe",
}
# Our event types as Customer.io reporting metrics.
CIO_METRICS = {
    "queued": "attempted",
    "sent": "sent",
    "delivered": "delivered",
    "deferred": "deferred",
    "bounced": "bounced",
    "opened": "opened",
    "clicked": "clicked",
    "unsubscribed": "unsubscribed",
    "complained": "spammed",
    "failed": "failed",
}


def _data(row: Mapping[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(row["data"])
    return data


def _epoch_ms(row: Mapping[str, Any]) -> int:
    return int(row["occurred_at"].timestamp() * 1000)


def ens_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """One event as ENS sends it."""
    data = _data(row)
    info: dict[str, Any] = {"messageKey": row["message_key"], "to": row["recipient"]}
    if data.get("contactKey"):
        info["subscriberKey"] = data["contactKey"]
    type_ = row["type"]
    if type_ == "sent":
        info["renderedSubject"] = data.get("renderedSubject") or data.get("subject")
    if type_ == "bounced":
        info |= {"bounceCode": "HARD" if data.get("bounceType") == "hard" else "SOFT",
                 "bounceMessage": data.get("reason"), "smtpReason": data.get("reason")}  # fmt: skip
        if data.get("smtpCode") is not None:
            info["smtpCode"] = data["smtpCode"]
    elif type_ == "failed":
        info |= {
            "statusCode": data.get("statusCode"),
            "statusMessage": data.get("reason"),
            "reason": data.get("reason"),
        }
    elif type_ == "clicked":  # ENS: location is empty when it could not be detected, as here
        info |= {"contentLink": data.get("url"), "userAgent": data.get("userAgent"), "ipAddress": data.get("ipAddress"),
                 "location": {}}  # fmt: skip
    elif type_ == "opened":
        info |= {"userAgent": data.get("userAgent"), "ipAddress": data.get("ipAddress"), "location": {}}
    return {
        "eventCategoryType": ENS_CATEGORIES.get(type_, type_),
        "timestampUTC": _epoch_ms(row),
        "compositeId": f"{ids.encode('evt', row['event_id'])}.{row['id']}",
        "definitionKey": row["definition_key"],
        "mid": row["account_id"],
        "eid": row["account_id"],  # one account is both the business unit and its enterprise
        "eventId": ids.encode("evt", row["event_id"]),
        "info": {k: v for k, v in info.items() if v is not None},
    }


def cio_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """One event as a Customer.io reporting webhook sends it."""
    data = _data(row)
    identifiers = data.get("identifiers") or ({"email": row["recipient"]} if row["recipient"] else {})
    fields: dict[str, Any] = {
        "delivery_id": row["message_key"],
        "recipient": row["recipient"],
        "customer_id": identifiers.get("id"),
        "identifiers": identifiers,
        "transactional_message_id": data.get("transactionalMessageId") or row["definition_key"],
    }
    type_ = row["type"]
    if type_ == "clicked":
        fields |= {"href": data.get("url"), "link_id": None}
    if type_ in ("bounced", "failed", "deferred"):
        fields["failure_message"] = data.get("reason")
    return {
        "event_id": ids.encode("evt", row["event_id"]),
        "object_type": "email",
        "metric": CIO_METRICS.get(type_, type_),
        "timestamp": int(row["occurred_at"].timestamp()),
        "data": {k: v for k, v in fields.items() if v is not None},
    }


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")


def request(
    fmt: str, rows: Sequence[Mapping[str, Any]], batched: bool, secrets: Sequence[str], timestamp: int,
    user_agent: str,
) -> tuple[str, bytes, dict[str, str]]:  # fmt: skip
    """(webhook id, body, headers) of one request carrying `rows` to a callback of format `fmt`."""
    msg_id, body = payload.request_body(rows, batched)
    if fmt == "standard":  # v1 or v1a, as each live key signs (delivery/signing.py)
        return msg_id, body, signing.headers(secrets, msg_id, timestamp, body, user_agent)
    ordered = sorted(rows, key=lambda r: (r["occurred_at"], r["event_id"]))
    base = {"content-type": "application/json", "user-agent": user_agent}
    if fmt == "ens":
        body = orjson.dumps([ens_event(r) for r in ordered])
        key = secrets[0].removeprefix(SECRET_PREFIX).encode()
        return msg_id, body, base | {"x-sfmc-ens-signature": base64.b64encode(_hmac(key, body)).decode()}
    if fmt == "customerio":
        events = [cio_event(r) for r in ordered]
        body = orjson.dumps(events if batched else events[0])
        signature = _hmac(secrets[0].encode(), f"v0:{timestamp}:".encode() + body).hex()
        return msg_id, body, base | {"x-cio-timestamp": str(timestamp), "x-cio-signature": signature}
    raise ValueError(f"unknown callback format {fmt!r}")


def ens_signature_key(secret: str) -> str:
    """The signatureKey an ENS callback's owner verifies with: the secret without its `whsec_` prefix."""
    return secret.removeprefix(SECRET_PREFIX)
