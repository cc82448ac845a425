"""Email address syntax, shared by request validation and message building.

Owns what counts as a usable address: an ASCII envelope address (internationalized
domains become IDNA; SMTPUTF8 local parts are refused because relays may not support
them) and, for From / Reply-To, an optional display name in any script.
"""

from __future__ import annotations

from email.policy import default as _policy

from email_validator import EmailNotValidError, validate_email

__all__ = ["normalize_address", "parse_mailbox"]


def normalize_address(address: str) -> str:
    """Return the ASCII form of a bare address, or raise ValueError saying why not."""
    try:
        result = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return result.ascii_email or result.normalized


def parse_mailbox(value: str) -> tuple[str, str]:
    """Split ``"Name <addr>"`` or ``"addr"`` into (display name, normalized address).

    Raises ValueError for anything else, including several addresses and line breaks
    (which would be a header injection once rendered from recipient attributes).
    """
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain line breaks")
    # The stdlib's RFC 5322 header parser, not parseaddr: parseaddr silently takes the
    # first of "a@x, b@y" on some Python versions.
    header = _policy.header_factory("From", value)
    addresses = header.addresses  # type: ignore[attr-defined]
    groups = header.groups  # type: ignore[attr-defined]
    if header.defects or len(addresses) != 1 or groups[0].display_name is not None:
        raise ValueError("expected a single address like 'Name <name@example.com>'")
    return addresses[0].display_name, normalize_address(addresses[0].addr_spec)
