"""Public identifiers: a type prefix on the row id (`cb_12`). A malformed or foreign id is a 404."""

from __future__ import annotations

from dispatcher.errors import NotFound


def encode(prefix: str, n: int) -> str:
    return f"{prefix}_{n}"


def decode(prefix: str, value: str, what: str) -> int:
    head, _, tail = value.partition("_")
    if head != prefix or not (tail.isascii() and tail.isdigit()) or len(tail) > 18:
        raise NotFound(f"no such {what}")
    return int(tail)
