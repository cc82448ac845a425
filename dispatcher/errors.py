"""The one exception hierarchy (the API middleware maps each class to a status and JSON body), and the one
translation of pydantic's validation errors into the API's codes, messages and field paths."""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic_core import ErrorDetails
from pydantic_core.core_schema import ErrorType


class DispatcherError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict:
        error: dict = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class InvalidRequest(DispatcherError):
    status, code = 400, "invalid_request"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None, **kw):
        super().__init__(message, field=field, **kw)
        if code:
            self.code = code


class Unauthorized(DispatcherError):
    status, code = 401, "unauthorized"


class Forbidden(DispatcherError):
    status, code = 403, "forbidden"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None, **kw):
        super().__init__(message, field=field, **kw)
        if code:
            self.code = code


class NotFound(DispatcherError):
    status, code = 404, "not_found"


class MethodNotAllowed(DispatcherError):
    status, code = 405, "method_not_allowed"


class Conflict(DispatcherError):
    status, code = 409, "conflict"

    def __init__(self, message: str, *, extra: dict | None = None, **kw):
        super().__init__(message, **kw)
        self.extra = extra or {}

    def body(self) -> dict:
        body = super().body()
        body["error"].update(self.extra)
        return body


class PayloadTooLarge(DispatcherError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(DispatcherError):
    status, code = 415, "unsupported_media_type"


class RateLimited(DispatcherError):
    status, code = 429, "rate_limited"


class Unavailable(DispatcherError):
    status, code = 503, "unavailable"


# --- validation errors: pydantic's error types in the API's vocabulary ---------------------------------------

# Error types pydantic raises itself; any other type is one of ours (PydanticCustomError), already an API code.
_PYDANTIC_TYPES = frozenset(typing.get_args(ErrorType))
# Parts of a pydantic error location that are not field names: union tags and type names.
_LOC_NOISE = re.compile(r"^(str|int|float|bool|list|dict|none|nullable|.*[\[\]\-].*)$")
_KINDS = {
    "string": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "dict": "an object",
    "model": "an object",
    "model_attributes": "an object",
    "mapping": "an object",
    "list": "an array",
    "tuple": "an array",
    "set": "an array",
    "iterable": "an array",
    "datetime": "an RFC 3339 timestamp, e.g. 2030-01-01T09:00:00Z",
    "datetime_from_date": "an RFC 3339 timestamp, e.g. 2030-01-01T09:00:00Z",
}
_SAME_STYLE = (("Input should be ", "must be "), ("Input should have ", "must have "), ("Input should ", "must "))


def _choices(expected: str) -> str:
    """pydantic lists literals as "'a', 'b' or 'c'" and union tags as "'a', 'b', 'c'": one way, the latter."""
    head, _, last = str(expected).rpartition(" or ")
    return f"{head}, {last}" if head else last


def _count(n: Any, kind: str) -> str:
    unit = "character" if kind.startswith("string") else "item"
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _own_style(message: str) -> str:
    for theirs, ours in _SAME_STYLE:
        if message.startswith(theirs):
            return ours + message[len(theirs) :]
    return message[:1].lower() + message[1:]


def vocabulary(error: ErrorDetails) -> tuple[str, str]:
    """The API's code and message for one pydantic error. Codes are the API's, never pydantic's type names, and
    messages read as the end of a sentence whose subject is the field ("is required", "must be an integer")."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind not in _PYDANTIC_TYPES:
        return kind, error["msg"]
    if kind in ("missing", "union_tag_not_found"):
        return "required", "is required"
    if kind == "extra_forbidden":
        return "unknown_field", "is not a known field"
    if kind in ("literal_error", "enum"):
        return "invalid_choice", f"must be one of {_choices(ctx.get('expected', ''))}"
    if kind == "union_tag_invalid":
        return "invalid_choice", f"must be one of {ctx.get('expected_tags', '')}"
    if kind in ("string_too_short", "too_short"):
        return "too_short", f"must have at least {_count(ctx.get('min_length'), kind)}"
    if kind in ("string_too_long", "too_long"):
        return "too_long", f"must have at most {_count(ctx.get('max_length'), kind)}"
    bounds = {"greater_than": "greater than", "greater_than_equal": "at least", "less_than": "less than",
              "less_than_equal": "at most"}  # fmt: skip
    if kind in bounds:
        limit = next(iter(ctx.values()), "")
        return "out_of_range", f"must be {bounds[kind]} {limit}"
    if kind == "string_pattern_mismatch":
        return "invalid_format", f"must match the pattern {ctx.get('pattern')}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return "invalid_value", str(ctx["error"])
    if kind == "json_invalid":
        return "invalid_json", _own_style(error["msg"])
    if kind.startswith("url_"):
        return "invalid_url", _own_style(error["msg"])
    base = kind.removesuffix("_type").removesuffix("_parsing")
    if base in _KINDS:
        return "invalid_type", f"must be {_KINDS[base]}"
    if kind.endswith(("_type", "_parsing")):
        return "invalid_type", _own_style(error["msg"])
    return "invalid_value", _own_style(error["msg"])


def field_path(loc: tuple[Any, ...], tags: frozenset[str] = frozenset()) -> str:
    """`recipients[2].to` from pydantic's location, without the union tags and type names it interleaves."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in tags or _LOC_NOISE.match(str(part)):
            continue
        else:
            path += ("." if path else "") + str(part)
    return path


def error_location(error: ErrorDetails) -> tuple[Any, ...]:
    """Where an error is, down to the innermost field: a missing or unknown union tag is the tag's own field."""
    loc = tuple(error["loc"])
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        loc += (str((error.get("ctx") or {}).get("discriminator", "type")).strip("'"),)
    return loc
