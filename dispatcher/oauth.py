"""OAuth2 client-credentials access tokens (the Marketing Cloud surface's `POST /v2/token`).

Credentials are an API key: `client_id` is the key's public prefix (the first 10 characters, shown by
`dispatcher keys list`) and `client_secret` is the key itself. An access token is stateless and signed
(HMAC-SHA256 with a key derived from the keyring): it names the API key, its account and its expiry.
Every use looks the key up again, so revoking the key ends its tokens at once, and the token always
carries the key's current scopes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
from dataclasses import dataclass

import asyncpg

from dispatcher.accounts import KEY_PREFIX, Principal
from dispatcher.crypto import Keyring
from dispatcher.db import queries

SQL = queries("oauth")
TOKEN_PREFIX = "dat_"
LIFETIME = 1200  # seconds: Marketing Cloud's access tokens last 20 minutes
CLIENT_ID_LENGTH = 10
_PAYLOAD = struct.Struct(">QQQ")  # key id, account id, expiry (unix seconds)
_SIG_BYTES = 20


@dataclass(frozen=True)
class Claim:
    key_id: int
    account_id: int
    expires_at: int


def token_key(keyring: Keyring) -> bytes:
    return hmac.new(keyring.tracking_key, b"dispatcher oauth access tokens", hashlib.sha256).digest()


def client_id(key: str) -> str:
    """The public half of a key's client credentials."""
    return key[:CLIENT_ID_LENGTH]


def credentials_match(client: str, secret: str) -> bool:
    return secret.startswith(KEY_PREFIX) and hmac.compare_digest(client.encode(), client_id(secret).encode())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(key: bytes, principal: Principal, now: float | None = None) -> tuple[str, int]:
    """(access token, seconds it lasts)."""
    expires = int(now if now is not None else time.time()) + LIFETIME
    payload = _PAYLOAD.pack(principal.key_id, principal.account_id, expires)
    sig = hmac.new(key, payload, hashlib.sha256).digest()[:_SIG_BYTES]
    return f"{TOKEN_PREFIX}{_b64(payload)}.{_b64(sig)}", LIFETIME


def is_token(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX)


def read(key: bytes, token: str, now: float | None = None) -> Claim | None:
    """The token's claim when its signature holds and it has not expired, else None."""
    if not is_token(token) or len(token) > 200:
        return None
    body, _, sig = token[len(TOKEN_PREFIX) :].partition(".")
    try:
        payload, signature = _unb64(body), _unb64(sig)
    except ValueError:
        return None
    if len(payload) != _PAYLOAD.size:
        return None
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:_SIG_BYTES]
    if not hmac.compare_digest(expected, signature):
        return None
    key_id, account_id, expires = _PAYLOAD.unpack(payload)
    if expires <= (now if now is not None else time.time()):
        return None
    return Claim(key_id, account_id, expires)


async def principal(conn: asyncpg.Connection | asyncpg.Pool, claim: Claim) -> Principal | None:
    """The caller a valid token stands for, while its API key is live."""
    row = await conn.fetchrow(SQL["live_key"], claim.key_id, claim.account_id)
    if row is None:
        return None
    return Principal(row["id"], row["account_id"], tuple(row["scopes"]), tuple(row["allowed_cidrs"]))
