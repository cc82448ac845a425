"""VERP: each message's envelope sender is `<local>+<token>@<bounce domain>` (DISPATCHER_BOUNCE_ADDRESS),
where the token names the account and the message and is signed, so a bounce sent back to it is trusted
without guessing, and a forged, tampered or expired one is refused.

    token = <account id>-<message id>-<day issued>-<mac>   (hex numbers, lower case; mac: 16 base32
                                                           characters of HMAC-SHA256 over the rest)

Everything is lower case, since some mail servers fold the case of local parts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

DAY = 86400
_TOKEN = re.compile(r"([0-9a-f]{1,16})-([0-9a-f]{1,16})-([0-9a-f]{1,8})-([a-z2-7]{16})")


@dataclass(frozen=True, slots=True)
class Token:
    account_id: int
    message_id: int
    day: int  # days since the epoch when the message was sent


def _mac(key: bytes, text: str) -> str:
    digest = hmac.new(key, f"verp|{text}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode().lower()


def make_token(key: bytes, account_id: int, message_id: int, now: float | None = None) -> str:
    day = int((time.time() if now is None else now) // DAY)
    text = f"{account_id:x}-{message_id:x}-{day:x}"
    return f"{text}-{_mac(key, text)}"


def envelope_sender(bounce_address: str, key: bytes, account_id: int, message_id: int) -> str:
    local, _, domain = bounce_address.rpartition("@")
    return f"{local}+{make_token(key, account_id, message_id)}@{domain}"


def read_token(key: bytes, token: str, *, valid_days: float, now: float | None = None) -> Token | None:
    """The token's account and message, or None when it is malformed, forged, tampered or expired."""
    m = _TOKEN.fullmatch(token.lower())
    if m is None:
        return None
    text = f"{m[1]}-{m[2]}-{m[3]}"
    if not hmac.compare_digest(_mac(key, text), m[4]):
        return None
    day = int(m[3], 16)
    today = (time.time() if now is None else now) / DAY
    if not -1 <= today - day <= valid_days:
        return None
    return Token(int(m[1], 16), int(m[2], 16), day)


def split_address(address: str, bounce_address: str) -> tuple[bool, str | None]:
    """(whether `address` is at the bounce domain, the token after `+` if its local part is the bounce
    local part with one)."""
    local, _, domain = address.strip().strip("<>").rpartition("@")
    bounce_local, _, bounce_domain = bounce_address.rpartition("@")
    if domain.lower() != bounce_domain.lower():
        return False, None
    head, plus, tail = local.partition("+")
    return True, tail if plus and head.lower() == bounce_local.lower() and tail else None
