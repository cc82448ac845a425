"""Email address syntax, shared by request validation and message building.

Owns what counts as a usable address: an ASCII envelope address (internationalized
domains become IDNA; SMTPUTF8 local parts are refused because relays may not support
them) and, for From / Reply-To, an optional display name in any script.

Mailboxes are read by the stdlib's RFC 5322 parser, behind a fast path for the two
shapes nearly every value has (``addr`` and ``Display Name <addr>`` without specials);
the fast path only ever answers where the parser would give the same answer.
"""

from __future__ import annotations

import functools
import re
from email.policy import default as _policy

from email_validator import EmailNotValidError, validate_email

__all__ = ["normalize_address", "parse_mailbox"]

# RFC 5322 atext without "=": the parser decodes a dot-atom that starts with "=?" as
# an RFC 2047 encoded word, so leaving "=" out keeps such values on the slow path.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/?^_`{|}~-]+"
_PLAIN_ADDR_SPEC = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*")
# Specials, quotes and comments change how a display name parses; "=" could start an
# encoded word.
_NAME_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."=]')
_NOT_A_MAILBOX = "expected a single address like 'Name <name@example.com>'"


@functools.lru_cache(maxsize=4096)  # pure; the same senders and recipients come back all day
def normalize_address(address: str) -> str:
    """Return the ASCII form of a bare address, or raise ValueError saying why not."""
    try:
        result = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return result.ascii_email or result.normalized


@functools.lru_cache(maxsize=4096)
def parse_mailbox(value: str) -> tuple[str, str]:
    """Split ``"Name <addr>"`` or ``"addr"`` into (display name, normalized address).

    Raises ValueError for anything else, including several addresses and line breaks
    (which would be a header injection once rendered from recipient attributes).
    """
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain line breaks")
    name, addr_spec = _split_plain_mailbox(value) or _split_mailbox(value)
    return name, normalize_address(addr_spec)


def _split_plain_mailbox(value: str) -> tuple[str, str] | None:
    """(display name, addr-spec) of a mailbox without specials, or None for any other value.

    Agrees with ``_split_mailbox`` wherever it answers; everything else goes there.
    """
    if _PLAIN_ADDR_SPEC.fullmatch(value):
        return "", value
    name, bracket, rest = value.partition("<")
    if not bracket or not rest.endswith(">"):
        return None
    # isprintable() refuses controls, surrogates and every whitespace but the ASCII
    # space, so split() below splits exactly where the parser sees whitespace.
    words = name.split()
    if not words or not name.isprintable() or _NAME_SPECIALS.search(name):
        return None
    addr_spec = rest[:-1]
    if not _PLAIN_ADDR_SPEC.fullmatch(addr_spec):
        return None
    return " ".join(words), addr_spec


def _split_mailbox(value: str) -> tuple[str, str]:
    """(display name, addr-spec) of a single mailbox by the full RFC 5322 parser."""
    # The stdlib's RFC 5322 header parser, not parseaddr: parseaddr silently takes the
    # first of "a@x, b@y" on some Python versions.
    try:
        header = _policy.header_factory("From", value)
    except Exception:
        # On some malformed values ('a@', '"') the parser fails with IndexError,
        # AttributeError, TypeError... instead of recording a defect.
        raise ValueError(_NOT_A_MAILBOX) from None
    addresses = header.addresses  # type: ignore[attr-defined]
    groups = header.groups  # type: ignore[attr-defined]
    if header.defects or len(addresses) != 1 or groups[0].display_name is not None:
        raise ValueError(_NOT_A_MAILBOX)
    return addresses[0].display_name, addresses[0].addr_spec
