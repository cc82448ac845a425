"""Open, click and unsubscribe tracking: signed tokens and HTML rewriting.

Owns the token format and the rewriting of outgoing HTML. Tokens are stateless — the
claim (kind, account, message, and for clicks the destination URL) travels inside the
token, authenticated with HMAC-SHA256 — so tracking needs no stored message body and
keeps working when message retention is disabled, and a click cannot be turned into
an open redirect to a URL we did not sign.

Token: ``base64url(payload) "." base64url(mac)`` where payload is
``"{kind}|{account_id}|{message_id}|{url}"`` and mac is the first 16 bytes of
HMAC-SHA256(secret, "dispatcher-tracking-v1|" + payload).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html as html_lib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "TrackingClaim",
    "TrackingKind",
    "make_token",
    "open_pixel",
    "read_token",
    "rewrite_html",
    "tracking_url",
]

TrackingKind = Literal["o", "c", "u"]

_KINDS = frozenset(("o", "c", "u"))
_DOMAIN = b"dispatcher-tracking-v1|"
_MAC_BYTES = 16  # 128 bits: ample against forgery, and keeps URLs short
# Long enough for any real link; refusing bigger tokens bounds the work an attacker
# can make us do per request.
MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True, slots=True)
class TrackingClaim:
    kind: TrackingKind
    account_id: int
    message_id: int
    url: str | None


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    # validate=True: otherwise stray characters are silently dropped and many strings
    # would decode to the same token.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def make_token(secret: bytes, kind: TrackingKind, account_id: int, message_id: int, url: str | None = None) -> str:
    """Sign a claim. ``url`` is required for clicks and refused otherwise."""
    if not secret:
        raise ValueError("tracking secret must not be empty")
    if kind not in _KINDS:
        raise ValueError(f"unknown tracking kind {kind!r}")
    if (kind == "c") != (url is not None):
        raise ValueError("a url is required for click tokens and only for them")
    payload = f"{kind}|{int(account_id)}|{int(message_id)}|{url or ''}".encode()
    return f"{_b64encode(payload)}.{_b64encode(_mac(secret, payload))}"


def read_token(secret: bytes, kind: TrackingKind, token: str) -> TrackingClaim | None:
    """The claim in ``token`` if it is authentic and of ``kind``; None otherwise, never raises."""
    try:
        if not secret or not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            return None
        encoded_payload, _, encoded_mac = token.partition(".")
        payload = _b64decode(encoded_payload)
        if not hmac.compare_digest(_b64decode(encoded_mac), _mac(secret, payload)):
            return None
        token_kind, account, message, url = payload.decode().split("|", 3)
        if token_kind != kind:
            return None
        return TrackingClaim(
            kind=kind,
            account_id=int(account),
            message_id=int(message),
            url=url if kind == "c" else None,
        )
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def tracking_url(public_url: str, kind: TrackingKind, token: str) -> str:
    """``{public_url}/t/{kind}/{token}`` — the routes the API layer serves."""
    return f"{public_url.rstrip('/')}/t/{kind}/{token}"


def open_pixel(src: str) -> str:
    # Not display:none: some clients skip loading hidden images, which would hide opens.
    return (
        f'<img src="{html_lib.escape(src)}" width="1" height="1" alt="" border="0" '
        'style="height:1px!important;width:1px!important;border:0!important;'
        'margin:0!important;padding:0!important" />'
    )


# Comments, scripts and styles are matched first so that anchors inside them are skipped.
# Attribute values are consumed whole, so a ">" inside quotes does not end the tag.
# Every alternative either matches or, for unterminated constructs, swallows the rest
# of the document (as a browser would), and quantifiers are possessive: the scan stays
# linear even on hostile input such as thousands of unclosed "<a " or "<!--".
_SCAN_RE = re.compile(
    r"""
    (?P<skip><!--.*?(?:-->|\Z)|<script\b.*?(?:</script\s*>|\Z)|<style\b.*?(?:</style\s*>|\Z))
    | (?P<anchor><a(?=[\s/>])(?:[^>"']++|"[^"]*+"|'[^']*+')*+>)
    | (?P<broken><a(?=[\s/>]).*\Z)
    """,
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)
_ATTR_RE = re.compile(
    r"""
    (?P<name>[^\s"'>/=]+)
    (?:\s*=\s*(?P<value>"[^"]*"|'[^']*'|[^\s"'=<>`]+))?
    """,
    re.VERBOSE,
)
_HTTP_RE = re.compile(r"https?://", re.IGNORECASE)
_BODY_END_RE = re.compile(r"</body\s*>", re.IGNORECASE)
_NO_TRACK_ATTRIBUTE = "data-notrack"


def _rewrite_anchor(tag: str, public_url: str, make_click_token: Callable[[str], str]) -> str:
    # Scan attributes in order from after "<a", so "data-href" or an "href=" inside
    # another attribute's value is never mistaken for the link.
    href: re.Match[str] | None = None
    for attr in _ATTR_RE.finditer(tag, 2, len(tag) - 1):
        name = attr.group("name").lower()
        if name == _NO_TRACK_ATTRIBUTE:
            return tag
        if name == "href" and href is None and attr.group("value") is not None:
            href = attr
    if href is None:
        return tag
    raw = href.group("value")
    quoted = raw[:1] in ("'", '"')
    url = html_lib.unescape(raw[1:-1] if quoted else raw).strip()
    # Our own links (unsubscribe, already-rewritten clicks) must reach us untouched.
    if not _HTTP_RE.match(url) or url.startswith(f"{public_url.rstrip('/')}/t/"):
        return tag
    new_url = tracking_url(public_url, "c", make_click_token(url))
    start, end = href.span("value")
    return f'{tag[:start]}"{html_lib.escape(new_url)}"{tag[end:]}'


def rewrite_html(
    html: str,
    public_url: str,
    make_click_token: Callable[[str], str],
    *,
    open_token: str | None = None,
) -> str:
    """Route http(s) links through ``/t/c/{token}`` and add the open pixel.

    ``make_click_token`` receives the destination URL (entities decoded) and returns a
    click token. Links that are not http(s), that already point at ``{public_url}/t/``
    (such as the unsubscribe link) or that carry a ``data-notrack`` attribute are left
    alone. With ``open_token`` the pixel goes before the last ``</body>``, or at the end.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group("anchor") is None:
            return match.group(0)
        return _rewrite_anchor(match.group("anchor"), public_url, make_click_token)

    rewritten = _SCAN_RE.sub(replace, html)
    if open_token is None:
        return rewritten
    pixel = open_pixel(tracking_url(public_url, "o", open_token))
    body_ends = list(_BODY_END_RE.finditer(rewritten))
    if not body_ends:
        return rewritten + pixel
    at = body_ends[-1].start()
    return rewritten[:at] + pixel + rewritten[at:]
