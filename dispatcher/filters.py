"""A subscription's payload filter: a small MongoDB-like JSON syntax, validated and compiled to an SQL/JSON
path predicate (`jsonpath`) that the fan-out evaluates with `@@` on a document of each event:

    {"type", "messageKey", "definitionKey", "recipient", "occurredAt", "data"}   (absent fields null)

Syntax (docs/filters.md): `{"field": value}` is equality; `{"field": {"$op": ...}}` applies operators
($eq, $ne, $in, $nin, $exists, $gt, $gte, $lt, $lte, $not); `$and`, `$or` take a list of filters and `$not`
one. A field is an event field, `data` or a dotted path into it (`data.order.total`); any other bare name
is a field of `data` (the form filters had before this syntax, still accepted with its meaning).

Every value reaches the path as a JSON literal escaped here (`_string`, `_number`), never as raw text.
Comparing a time uses `.datetime()`, guarded so that no event's data can make the evaluation raise (an
error inside the fan-out would refuse the whole batch of events), and is done twice more through fixed
templates for times ending in `Z`, which PostgreSQL before 17 does not parse without one."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from dispatcher.errors import InvalidRequest

EVENT_FIELDS = ("type", "messageKey", "definitionKey", "recipient", "occurredAt")
MAX_DEPTH = 5  # nested $and / $or / $not
MAX_NODES = 500  # conditions and operators in one filter
MAX_KEYS = 20  # keys in one object
MAX_LIST = 100  # items of $in / $nin, filters of $and / $or
MAX_SEGMENTS = 10  # parts of a dotted path
MAX_STRING = 200
MAX_KEY = 100
MAX_PATH = 200_000  # characters of the compiled path ($not repeats its operand)
LOGICAL = ("$and", "$or", "$not")
OPERATORS = ("$eq", "$ne", "$in", "$nin", "$exists", "$gt", "$gte", "$lt", "$lte", "$not")
_RANGE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
# RFC 3339 with a date, a time and an offset (Z or ±hh:mm); fractions of a second up to microseconds.
_TIME = re.compile(r"^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d{1,6})?([Zz]|[+-]\d\d:\d\d)$")
_Z_TEMPLATES = ('"YYYY-MM-DD\\"T\\"HH24:MI:SS\\"Z\\""', '"YYYY-MM-DD\\"T\\"HH24:MI:SS.US\\"Z\\""')


class FilterError(InvalidRequest):
    """A filter the syntax refuses; `field` is where, e.g. `filters.$or[1].data.total.$gtt`."""


class _Budget:
    def __init__(self) -> None:
        self.nodes = 0

    def spend(self, where: str) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise FilterError(f"has more than {MAX_NODES} conditions", field=where, code="too_long")


def compile_filter(filters: dict[str, Any], field: str = "filters") -> str | None:
    """The jsonpath predicate for a filter (None for {}: everything matches), or FilterError."""
    if not isinstance(filters, dict):
        raise FilterError("must be an object", field=field, code="invalid_type")
    if not filters:
        return None
    path = _document(filters, field, 0, _Budget())
    if len(path) > MAX_PATH:
        raise FilterError(f"compiles to more than {MAX_PATH} characters: simplify it", field=field, code="too_long")
    return path


# --- filter documents: conditions joined by AND ---------------------------------------------------------


def _document(doc: Any, where: str, depth: int, budget: _Budget) -> str:
    if not isinstance(doc, dict):
        raise FilterError("must be an object", field=where, code="invalid_type")
    if not doc:
        raise FilterError("must have at least 1 item", field=where, code="too_short")
    if len(doc) > MAX_KEYS:
        raise FilterError(f"must have at most {MAX_KEYS} items", field=where, code="too_long")
    if depth > MAX_DEPTH:
        raise FilterError(f"nests deeper than {MAX_DEPTH} levels", field=where, code="too_deep")
    parts = []
    for key, value in doc.items():
        here = f"{where}.{key}"
        budget.spend(here)
        if key.startswith("$"):
            parts.append(_logical(key, value, here, depth, budget))
        else:
            parts.append(_condition(_path(key, here), value, here, budget))
    return _and(parts)


def _logical(key: str, value: Any, where: str, depth: int, budget: _Budget) -> str:
    if key == "$not":
        return _negate(_document(value, where, depth + 1, budget))
    if key not in ("$and", "$or"):
        raise FilterError(f"is not an operator here: use one of {', '.join(LOGICAL)}", field=where,
                          code="invalid_choice")  # fmt: skip
    items = _list(value, where)
    parts = [_document(item, f"{where}[{i}]", depth + 1, budget) for i, item in enumerate(items)]
    return _and(parts) if key == "$and" else "(" + " || ".join(parts) + ")"


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise FilterError("must be an array", field=where, code="invalid_type")
    if not value:
        raise FilterError("must have at least 1 item", field=where, code="too_short")
    if len(value) > MAX_LIST:
        raise FilterError(f"must have at most {MAX_LIST} items", field=where, code="too_long")
    return value


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "(" + " && ".join(parts) + ")"


def _negate(predicate: str) -> str:
    """Does not match: false, or unknown (a comparison of unlike types, a time that does not parse)."""
    return f"(!({predicate}) || ({predicate}) is unknown)"


# --- one field's condition -------------------------------------------------------------------------------


def _path(key: str, where: str) -> str:
    """The jsonpath of a field: an event field, `data[.a.b]`, or (the older form) a field of data."""
    if not key or len(key) > MAX_KEY:
        raise FilterError(f"must be a field name of 1 to {MAX_KEY} characters", field=where, code="invalid_value")
    if key in EVENT_FIELDS:
        return "$." + key
    if key == "data" or key.startswith("data."):
        segments = key.split(".")[1:]
    elif "." in key:
        raise FilterError("a dotted path starts with data. (data.order.total)", field=where, code="invalid_value")
    else:
        segments = [key]
    if len(segments) > MAX_SEGMENTS:
        raise FilterError(f"has more than {MAX_SEGMENTS} parts", field=where, code="too_deep")
    if any(not s for s in segments):
        raise FilterError("has an empty part", field=where, code="invalid_value")
    return "$.data" + "".join("." + _string(s, where) for s in segments)


def _condition(path: str, value: Any, where: str, budget: _Budget) -> str:
    if not isinstance(value, dict):
        return _compare(path, "==", value, where)
    if not value:
        raise FilterError("must have at least 1 operator", field=where, code="too_short")
    parts = []
    for op, arg in value.items():
        here = f"{where}.{op}"
        budget.spend(here)
        parts.append(_operator(path, op, arg, here, budget))
    return _and(parts)


def _operator(path: str, op: str, arg: Any, where: str, budget: _Budget) -> str:
    if op == "$eq":
        return _compare(path, "==", arg, where)
    if op == "$ne":
        return _negate(_compare(path, "==", arg, where))
    if op in ("$in", "$nin"):
        items = _list(arg, where)
        either = "(" + " || ".join(_compare(path, "==", v, f"{where}[{i}]") for i, v in enumerate(items)) + ")"
        return either if op == "$in" else _negate(either)
    if op == "$exists":
        if not isinstance(arg, bool):
            raise FilterError("must be true or false", field=where, code="invalid_type")
        # The fan-out's document holds an event field it lacks as null (one jsonb_build_object per event
        # and subscription, nothing stripped): for those fields, null is absent.
        present = f"exists({path} ? (@ != null))" if path[2:] in EVENT_FIELDS else f"exists({path})"
        return present if arg else f"!{present}"
    if op in _RANGE:
        return _range(path, _RANGE[op], arg, where)
    if op == "$not":
        if not isinstance(arg, dict):
            raise FilterError("must be an object of operators", field=where, code="invalid_type")
        return _negate(_condition(path, arg, where, budget))
    raise FilterError(f"must be one of {', '.join(OPERATORS)}", field=where, code="invalid_choice")


def _compare(path: str, op: str, value: Any, where: str) -> str:
    return f"{path} {op} {_scalar(value, where)}"


def _range(path: str, op: str, value: Any, where: str) -> str:
    """A number compares as a number; a string must be an RFC 3339 time and compares as a time."""
    if not isinstance(value, str):
        return f"{path} {op} {_number(value, where)}"
    if not _TIME.match(value):
        raise FilterError("must be a number or an RFC 3339 time with an offset, e.g. 2030-01-01T09:00:00Z",
                          field=where, code="invalid_value")  # fmt: skip
    try:
        moment = datetime.fromisoformat(value.upper().replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise FilterError("is not a valid time", field=where, code="invalid_value") from None
    aware = _string(moment.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00"), where)
    naive = _string(moment.strftime("%Y-%m-%dT%H:%M:%S.%f"), where)
    branches = [f'{path}.datetime() ? (@.type() == "timestamp with time zone") {op} {aware}.datetime()']
    branches += [f"{path}.datetime({t}) {op} {naive}.datetime()" for t in _Z_TEMPLATES]
    return "(" + " || ".join(branches) + ")"


# --- literals ---------------------------------------------------------------------------------------------


def _scalar(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _string(value, where)
    if isinstance(value, int | float):
        return _number(value, where)
    raise FilterError("must be a string, a number or true or false", field=where, code="invalid_type")


def _string(value: str, where: str) -> str:
    """A jsonpath string literal: JSON's escapes (quotes, backslashes, control characters, every non-ASCII
    character as \\uXXXX) are jsonpath's too. NUL is refused as PostgreSQL's text refuses it."""
    if len(value) > MAX_STRING:
        raise FilterError(f"must have at most {MAX_STRING} characters", field=where, code="too_long")
    if "\x00" in value:
        raise FilterError("must not contain the NUL character", field=where, code="invalid_character")
    return json.dumps(value, ensure_ascii=True)


def _number(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FilterError("must be a number", field=where, code="invalid_type")
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError("must be a finite number", field=where, code="invalid_value")
    return repr(value)


# --- the filter's JSON Schema (OpenAPI) -------------------------------------------------------------------
# Stricter than compile_filter where a schema cannot say the rule (nesting, days of a month, the size of
# the whole): whatever it allows compiles.
_KEY = r"^([^$.\u0000][^.\u0000]*|data(\.[^.\u0000]+){1,10})$"
_SCHEMA_TIME = (
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?"
    r"(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)


def json_schema() -> dict[str, Any]:
    text = {"type": "string", "maxLength": MAX_STRING, "pattern": r"^[^\u0000]*$"}
    scalar = {"anyOf": [text, {"type": "number"}, {"type": "boolean"}]}
    values = {"type": "array", "items": scalar, "minItems": 1, "maxItems": 20}
    bound = {"anyOf": [{"type": "number"}, {"type": "string", "pattern": _SCHEMA_TIME}]}
    ops: dict[str, Any] = {"$eq": scalar, "$ne": scalar, "$in": values, "$nin": values, "$exists": {"type": "boolean"}}
    ops |= {op: bound for op in _RANGE}
    operators = {"type": "object", "properties": ops, "additionalProperties": False, "minProperties": 1}
    operators = {**operators, "properties": {**ops, "$not": operators}}
    condition = {"anyOf": [scalar, operators]}
    names = {"maxLength": MAX_KEY, "pattern": _KEY}
    inner = {"type": "object", "propertyNames": names, "additionalProperties": condition, "minProperties": 1,
             "maxProperties": 5}  # fmt: skip
    some = {"type": "array", "items": inner, "minItems": 1, "maxItems": 5}
    return {
        "type": "object",
        "description": "Which events are sent: fields, operators and data paths (docs/filters.md)",
        "properties": {"$and": some, "$or": some, "$not": inner},
        "propertyNames": {"anyOf": [names, {"enum": list(LOGICAL)}]},
        "additionalProperties": condition,
        "maxProperties": MAX_KEYS,
    }
