"""Standard Webhooks signatures of "{id}.{timestamp}.{body}", one per live signing key, newest first.

A key's prefix names its scheme, and each scheme is one signer here: `whsec_` signs `v1,<base64 HMAC-SHA256>`,
`whsk_` (an ed25519 private key) signs `v1a,<base64 ed25519 signature>`. A callback's keys are of its
scheme, but while a switch of scheme is in its grace period both kinds are live and the header carries
both (receivers skip the versions they do not verify), so nothing else branches on the scheme.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable, Sequence

from dispatcher.crypto import PRIVATE_KEY_PREFIX, SECRET_PREFIX, ed25519_key


def secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def v1(secret: str, signed: bytes) -> str:
    return "v1," + base64.b64encode(hmac.digest(secret_bytes(secret), signed, "sha256")).decode()


def v1a(secret: str, signed: bytes) -> str:
    return "v1a," + base64.b64encode(ed25519_key(secret).sign(signed)).decode()


SIGNERS: dict[str, Callable[[str, bytes], str]] = {SECRET_PREFIX: v1, PRIVATE_KEY_PREFIX: v1a}


def signer(secret: str) -> Callable[[str, bytes], str]:
    for prefix, sign_with in SIGNERS.items():
        if secret.startswith(prefix):
            return sign_with
    return v1  # a bare base64 HMAC secret, as Standard Webhooks libraries also accept


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header value; space-separated when several keys are live (rotation)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(signer(secret)(secret, signed) for secret in secrets)


def headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes, user_agent: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": user_agent,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets, msg_id, timestamp, body),
    }
