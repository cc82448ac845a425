"""Field types the request models share, each stating in its JSON schema exactly what it enforces, so that
/openapi.json describes every refusal a validator makes.

Patterns are written once, in the dialect JSON Schema uses (ECMA 262), which Python's `re` reads the same
way for these constructs; the validators compile the very same text.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

T = TypeVar("T")

# Every string and object key of a request body (PostgreSQL text and jsonb cannot hold U+0000).
NO_NUL = "^[^\\u0000]*$"
# Names, descriptions and keys: control characters only end up as log, header or terminal injection.
NO_CONTROL = "^[^\\u0000-\\u001f\\u007f]*$"
_CONTROL = re.compile("[\\u0000-\\u001f\\u007f]")


def _ipv6() -> str:
    """RFC 3986's IPv6address: exactly what urllib accepts between brackets."""
    h16, octet = "[0-9A-Fa-f]{1,4}", "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    ls32 = f"(?:{h16}:{h16}|{octet}(?:\\.{octet}){{3}})"
    forms = [f"(?:{h16}:){{6}}{ls32}", f"::(?:{h16}:){{5}}{ls32}", f"(?:{h16})?::(?:{h16}:){{4}}{ls32}"]
    forms += [f"(?:(?:{h16}:){{0,{n}}}{h16})?::(?:{h16}:){{{3 - n}}}{ls32}" for n in (1, 2)]
    forms += [f"(?:(?:{h16}:){{0,3}}{h16})?::{h16}:{ls32}", f"(?:(?:{h16}:){{0,4}}{h16})?::{ls32}"]
    forms += [f"(?:(?:{h16}:){{0,5}}{h16})?::{h16}", f"(?:(?:{h16}:){{0,6}}{h16})?::"]
    return "(?:" + "|".join(forms) + ")"


_PCT = "%[0-9A-Fa-f]{2}"
_SUB = "A-Za-z0-9._~!$&'()*+,;=\\-"  # unreserved and sub-delims
_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
_TAIL = f"(?:[{_SUB}:@/?]|{_PCT})*"
# An absolute http(s) URI (RFC 3986) with a host, an optional valid port and no user information.
URL_PATTERN = (
    f"^[Hh][Tt][Tt][Pp][Ss]?://(?:\\[{_ipv6()}\\]|(?:[{_SUB}]|{_PCT})+)(?::{_PORT}?)?"
    f"(?:/(?:[{_SUB}:@/]|{_PCT})*)?(?:\\?{_TAIL})?(?:#{_TAIL})?$"
)
_URL = re.compile(URL_PATTERN)
_URL_MAX = 2048


def _error(code: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(code, message)


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise _error("invalid_character", "must not contain control characters (U+0000 to U+001F, U+007F)")
    return value


def _url(value: str) -> str:
    if value != value.strip() or " " in value or _CONTROL.search(value):
        raise _error("invalid_url", "must not contain spaces or control characters")
    if not _URL.match(value):
        raise _error(
            "invalid_url",
            "must be an absolute http(s) URL with a host and no credentials, any other character percent-encoded",
        )
    return value


def _whole(value: Any) -> Any:
    """JSON does not tell 5 from 5.0 (JSON Schema calls both integers), so a whole float is that integer.
    Booleans and strings stay refused: request models are strict."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _not_null(value: Any) -> Any:
    if value is None:
        raise _error("null_not_allowed", "must not be null; leave the field out to keep it")
    return value


PlainText = Annotated[str, AfterValidator(_no_control), Field(json_schema_extra={"pattern": NO_CONTROL})]
Name = Annotated[PlainText, Field(min_length=1, max_length=100)]
Description = Annotated[PlainText, Field(max_length=1000)]
Url = Annotated[
    str,
    AfterValidator(_url),
    Field(min_length=1, max_length=_URL_MAX, json_schema_extra={"format": "uri", "pattern": URL_PATTERN}),
]
WHOLE = BeforeValidator(_whole)  # after any constraints, so the document still states them
Int = Annotated[int, WHOLE]
# A PATCH field that may be left out (its default, None, is never validated) but not be set to null. It is
# validated as T alone, so errors are located at the field, not at a branch of a union with None.
if TYPE_CHECKING:
    Omittable = Annotated[T | None, BeforeValidator(_not_null)]
else:
    Omittable = Annotated[T, BeforeValidator(_not_null)]
