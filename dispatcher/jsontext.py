"""JSON text in and out: orjson on the fast path, the standard library only where orjson would lose a number.

orjson reads an integer beyond 64 bits as a float (123456789012345678901234567890 becomes
1.2345678901234568e+29) and refuses to write one. PostgreSQL's jsonb keeps any number exactly, so a
document that may hold such an integer is read, or written, again by the standard library, which keeps
it exact. Everything else (validation of the text included) stays with orjson.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# orjson reads every integer of up to 18 digits exactly; one of 19 or more digits may be beyond 64 bits.
# A false alarm (a long digit run in a string or a fraction) only costs the slower, equally correct parse.
_LONG_NUMBER = re.compile(r"[0-9]{19}")
_LONG_NUMBER_BYTES = re.compile(rb"[0-9]{19}")


def loads(text: str | bytes) -> Any:
    """Parse JSON; integers of any size come back exact. Raises orjson.JSONDecodeError for invalid text, and
    ValueError for an integer longer than Python converts (4300 digits)."""
    data = orjson.loads(text)
    found = _LONG_NUMBER_BYTES.search(text) if isinstance(text, bytes) else _LONG_NUMBER.search(text)
    if found is None:
        return data
    return json.loads(text)  # orjson accepted the text, so only the numbers can differ


def dumps(value: Any) -> bytes:
    """Serialize compactly, as orjson does; an integer beyond 64 bits is written exactly."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: "Integer exceeds 64-bit range", or a type neither writes
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
