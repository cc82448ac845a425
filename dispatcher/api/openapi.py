"""/openapi.json, generated from the same route table and pydantic models that validate requests."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, TypeAdapter

import dispatcher
from dispatcher.api.routing import Route

_REF = "#/components/schemas/{model}"
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


def _schema(tp: Any, defs: dict[str, Any], mode: str = "validation") -> dict[str, Any]:
    schema = TypeAdapter(tp).json_schema(ref_template=_REF, mode=mode)  # type: ignore[arg-type]
    defs.update(schema.pop("$defs", {}))
    return schema


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def build(routes: list[Route]) -> dict[str, Any]:
    defs: dict[str, Any] = {"Error": _ERROR}
    paths: dict[str, Any] = {}
    for r in routes:
        path = re.sub(r"{(\w+):[^}]+}", r"{\1}", r.path)  # aiohttp's {name:regex} is {name} in OpenAPI
        op: dict[str, Any] = {"summary": r.summary, "operationId": r.handler.__name__, "tags": [r.tag]}
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 100},
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
                "content": {"application/json": {"schema": _schema(r.body, defs)}},
            }
        ok: dict[str, Any] = {"description": "Success"}
        if r.response is not None:
            ok["content"] = {"application/json": {"schema": _schema(r.response, defs, "serialization")}}
        responses: dict[str, Any] = {str(r.status): ok}
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
