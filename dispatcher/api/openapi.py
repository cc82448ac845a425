"""/openapi.json, generated from the same route table and pydantic models that validate requests.

It states every rule a validator enforces: what the models declare, plus what the body reader refuses in
every body (U+0000 in any string or key, nesting deeper than 32 levels), so a request the document allows
is one the service accepts.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

import dispatcher
from dispatcher.api.routing import MAX_DEPTH, Route
from dispatcher.inputs import NO_NUL

_REF = "#/components/schemas/{model}"
_ID = {"type": "string", "minLength": 1, "maxLength": 100}  # an id that does not exist is a 404, never a 400
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string"},
            },
        }
    },
}


_ANY = "x-any-json-value"
_JSON_VALUE_REF = {"$ref": _REF.format(model="JsonValue")}
_NESTED_REF = {"$ref": _REF.format(model="JsonNestedValue")}
_JSON_VALUE = {
    "description": f"Any JSON value: no string or key holds U+0000, and it nests at most {MAX_DEPTH} levels.",
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": _NESTED_REF},
        {"type": "object", "propertyNames": {"pattern": NO_NUL}, "additionalProperties": _NESTED_REF},
    ],
}
# The same rule inside an array or object, untyped: `pattern` binds strings, `items` arrays, `propertyNames` and
# `additionalProperties` objects. Client generators (openapi-python-client) cannot build a union that contains
# itself, so the recursion goes through this schema and not through JsonValue's anyOf.
_JSON_NESTED = {
    "description": "Any JSON value, with the rules of JsonValue.",
    "pattern": NO_NUL,
    "items": _NESTED_REF,
    "propertyNames": {"pattern": NO_NUL},
    "additionalProperties": _NESTED_REF,
}


class _Generate(GenerateJsonSchema):
    """pydantic's JSON schema, plus the rules the body reader applies to every string, key and free-form value."""

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        out = super().str_schema(schema)
        out.setdefault("pattern", NO_NUL)
        return out

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        out = super().dict_schema(schema)
        out.setdefault("propertyNames", {"pattern": NO_NUL})
        return out

    def any_schema(self, schema: core_schema.AnySchema) -> JsonSchemaValue:
        return {_ANY: True}  # pydantic checks the refs it generates: this one is put in afterwards

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        out = super().default_schema(schema)
        # a field that may be left out but not be null (inputs.Omittable) has no default to show
        if out.get("default", ...) is None and "anyOf" not in out and out.get("type") != "null":
            out.pop("default")
        return out


def _schema(tp: Any, defs: dict[str, Any], mode: str = "validation") -> dict[str, Any]:
    schema = TypeAdapter(tp).json_schema(ref_template=_REF, mode=mode, schema_generator=_Generate)  # type: ignore[arg-type]
    defs.update(_free_form(schema.pop("$defs", {})))
    return _free_form(schema)


def _model(tp: Any, defs: dict[str, Any], mode: str = "validation") -> dict[str, Any]:
    """A body or answer: a model is a shared component, so every operation that sends or answers it names one
    schema (inline copies under two status codes are two models to a client generator)."""
    schema = _schema(tp, defs, mode)
    if not is_model(tp):
        return schema
    name = tp.__name__
    if defs.get(name, schema) != schema:  # the model reads differently as input and as output
        name += "Input" if mode == "validation" else "Output"
    defs[name] = schema
    return {"$ref": _REF.format(model=name)}


def _free_form(schema: Any) -> Any:
    """Free-form values (`Any`, and the extra fields of a model that keeps them) as JsonValue."""
    if isinstance(schema, list):
        return [_free_form(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    if _ANY in schema:
        return dict(_JSON_VALUE_REF)
    out = {k: _free_form(v) for k, v in schema.items()}
    if out.get("additionalProperties") is True:
        out["additionalProperties"] = dict(_JSON_VALUE_REF)
        out.setdefault("propertyNames", {"pattern": NO_NUL})
    return out


def _error_ref(description: str, schema: str = "Error") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=schema)}}},
    }


def build(routes: list[Route]) -> dict[str, Any]:
    defs: dict[str, Any] = {"Error": _ERROR, "JsonValue": _JSON_VALUE, "JsonNestedValue": _JSON_NESTED}
    paths: dict[str, Any] = {}
    for r in routes:
        path = re.sub(r"{(\w+):[^}]+}", r"{\1}", r.path)  # aiohttp's {name:regex} is {name} in OpenAPI
        op: dict[str, Any] = {"summary": r.summary, "operationId": r.handler.__name__, "tags": [r.tag]}
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": _schema(r.params[name], defs) if name in r.params else dict(_ID),
            }
            for name in re.findall(r"{(\w+)}", path)
        ]
        if r.query is not None:
            q = _schema(r.query, defs)
            for name, prop in q.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": name in q.get("required", []), "schema": prop})
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _model(r.body, defs)}},
            }
        ok: dict[str, Any] = {"description": "Success"}
        if r.response is not None:
            ok["content"] = {"application/json": {"schema": _model(r.response, defs, "serialization")}}
        responses: dict[str, Any] = {str(r.status): ok}
        if r.error_shape is not None:  # a compatibility route answers errors in its system's own shape
            defs[r.error_shape.name] = r.error_shape.schema
        error_schema = r.error_shape.name if r.error_shape is not None else "Error"

        def _error(description: str, schema: str = error_schema) -> dict[str, Any]:
            return _error_ref(description, schema)

        if r.status == 201:
            responses["200"] = ok  # idempotent replays answer 200 with the original
        if r.scope:
            responses.update({"401": _error("Missing or invalid key"), "403": _error("Scope or address refused"),
                              "429": _error("Rate limited")})  # fmt: skip
        if r.body is not None or r.query is not None or params:
            responses["400"] = _error("Invalid request")
        if params or r.body is not None:
            responses["404"] = _error("Not found")
        if r.body is not None:
            responses.update({"409": _error("Conflict"), "413": _error("Body too large"), "415": _error("Not JSON")})
        responses.update({str(status): _error(why) for status, why in r.errors.items()})
        op["responses"] = responses
        if r.scope:
            op["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "dispatcher", "version": dispatcher.__version__},
        "paths": paths,
        "components": {"schemas": defs, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)
