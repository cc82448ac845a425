"""Standard Webhooks signatures: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">, one per live secret."""

from __future__ import annotations

import base64
import hmac

from dispatcher.crypto import SECRET_PREFIX


def secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(keys: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header value; space-separated when several secrets are live (rotation)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.digest(key, signed, "sha256")).decode() for key in keys)


def headers(keys: list[bytes], msg_id: str, timestamp: int, body: bytes, user_agent: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": user_agent,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(keys, msg_id, timestamp, body),
    }
