"""Declarative routes: one table feeds aiohttp routing, request validation and /openapi.json.

A handler receives a `Call` (validated body and query, the caller, the app's resources) and
returns a JSON-able value or a `web.StreamResponse`.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError

from dispatcher import jsontext
from dispatcher.accounts import Principal
from dispatcher.errors import (
    DispatcherError,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    error_location,
    field_path,
    vocabulary,
)

Handler = Callable[["Call"], Awaitable[Any]]


@dataclass(frozen=True)
class ErrorShape:
    """How a compatibility route answers every error (auth, validation, domain): its body, and that body's
    schema under `name` in /openapi.json."""

    name: str
    schema: dict[str, Any]
    render: Callable[[DispatcherError], Any]


@dataclass
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    scope: str | None
    body: Any = None
    query: type[BaseModel] | None = None
    response: Any = None
    status: int = 200
    tag: str = "default"
    raw_body: bool = False
    max_body: int | None = None  # bytes; None: DISPATCHER_MAX_BODY_BYTES
    params: dict[str, Any] = field(default_factory=dict)  # path parameter -> the type its handler enforces
    errors: dict[int, str] = field(default_factory=dict)  # error answers the route gives beyond the usual ones
    error_shape: ErrorShape | None = None  # a compatibility surface's own error body; None: the native one
    access_tokens: bool = False  # an OAuth2 access token (POST /v2/token) is accepted beside API keys


@dataclass
class Call:
    request: web.Request
    principal: Principal | None
    body: Any
    query: Any

    @property
    def app(self) -> web.Application:
        return self.request.app

    def path(self, name: str) -> str:
        return self.request.match_info[name]


@dataclass
class Router:
    routes: list[Route] = field(default_factory=list)

    def route(
        self, method: str, path: str, *, summary: str, scope: str | None, **kw: Any
    ) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.routes.append(Route(method, path, fn, summary, scope, **kw))
            return fn

        return register


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=jsontext.dumps(data), status=status, content_type="application/json", headers=headers)


def validation_error(err: ValidationError, prefix: str = "", tags: frozenset[str] = frozenset()) -> InvalidRequest:
    first = err.errors(include_url=False)[0]
    path = field_path(error_location(first), tags)
    if prefix:
        path = f"{prefix}.{path}" if path and not path.startswith("[") else prefix + path
    code, message = vocabulary(first)
    return InvalidRequest(message, field=path or None, code=code)


async def read_json(request: web.Request, limit: int) -> Any:
    if request.content_type != "application/json":
        raise UnsupportedMediaType("request body must be application/json")
    too_large = PayloadTooLarge(f"request body is larger than {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    if len(raw) > limit:
        raise too_large
    try:
        data = jsontext.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:  # the exact re-parse of a body with a long number recurses per level
        raise InvalidRequest(f"is nested deeper than {MAX_DEPTH} levels", code="too_deep") from None
    check_storable(data)
    return data


MAX_DEPTH = 32


def check_storable(value: Any, path: str = "", depth: int = 0) -> None:
    """Refuse what PostgreSQL cannot store (U+0000 in text or jsonb) and absurd nesting, naming the
    field, before any model sees the body."""
    if depth > MAX_DEPTH:
        raise InvalidRequest(f"is nested deeper than {MAX_DEPTH} levels", field=path or None, code="too_deep")
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidRequest("must not contain the NUL character", field=path or None, code="invalid_character")
    elif isinstance(value, dict):
        for k, v in value.items():
            child = f"{path}.{k}" if path else str(k)
            if "\x00" in k:
                raise InvalidRequest(
                    "keys must not contain the NUL character", field=path or None, code="invalid_character"
                )
            check_storable(v, child, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_storable(v, f"{path}[{i}]", depth + 1)


def validate(schema: Any, data: Any, *, prefix: str = "", tags: frozenset[str] = frozenset()) -> Any:
    try:
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            return schema.model_validate(data)
        if isinstance(schema, TypeAdapter):
            return schema.validate_python(data)
        return schema(data)  # a parse function
    except ValidationError as err:
        raise validation_error(err, prefix, tags) from None


def query_dict(request: web.Request, model: type[BaseModel]) -> dict[str, Any]:
    """Repeated query parameters become lists only where the model expects a list."""
    out: dict[str, Any] = {}
    for name in request.query:
        info = model.model_fields.get(name)
        is_list = info is not None and _is_list(info.annotation)
        out[name] = request.query.getall(name) if is_list else request.query.get(name)
    return out


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    return any(_is_list(a) for a in typing.get_args(annotation))
