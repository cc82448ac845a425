"""HTTP handlers for event sources: managing them (API key, scope callbacks:manage) and the public
ingest address a provider posts to (`POST /in/{sourceId}`, authenticated only as the provider does)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, create_model

from dispatcher.api.keys import DB, INBOUND_WRITER, KEYRING, METRICS, SETTINGS, SOURCE_FETCHER
from dispatcher.api.routing import Call, Router, validate
from dispatcher.errors import InvalidRequest, PayloadTooLarge, Unauthorized
from dispatcher.inbound import ingest, sources
from dispatcher.inbound.adapter import Received, Refused, Request, Unreadable
from dispatcher.inbound.providers import ADAPTERS
from dispatcher.inbound.sources import ReceiptOut, SourceOut
from dispatcher.inputs import Description, Name, Omittable
from dispatcher.logs import get_logger

router = Router()
log = get_logger("dispatcher.sources")
_BODY = ConfigDict(extra="forbid", strict=True)


def _source_in(provider: str) -> type[BaseModel]:
    adapter = ADAPTERS[provider]
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{adapter.config_model.__name__.removesuffix('Config')}SourceIn",
        __config__=_BODY,
        name=(Name, ...),
        provider=(Literal[provider], ...),  # type: ignore[arg-type]
        description=(Description | None, None),
        config=(adapter.config_model, ...),
    )


if TYPE_CHECKING:
    SourceIn = BaseModel
else:
    SourceIn = Annotated[Union[tuple(_source_in(p) for p in ADAPTERS)], Field(discriminator="provider")]  # noqa: UP007
_SOURCE_IN: TypeAdapter[Any] = TypeAdapter(SourceIn)


class SourcePatch(BaseModel):
    model_config = _BODY
    name: Omittable[Name] = None
    description: Description | None = Field(None, description="null clears it")
    config: Omittable[dict[str, Any]] = Field(
        None, description="Fields to change, checked against the provider's config; null removes an optional one"
    )


class SourceListOut(BaseModel):
    sources: list[SourceOut]


class IngestOut(BaseModel):
    received: int = Field(description="Provider events in the request")
    recorded: int = Field(description="Events recorded now")
    duplicates: int = Field(description="Provider events recorded before (a retry)")
    ignored: int = Field(description="Provider events with no counterpart in the event vocabulary")


def _account(call: Call) -> int:
    assert call.principal is not None
    return call.principal.account_id


def _json(call: Call, row: Any) -> dict[str, Any]:
    return sources.source_json(row, call.app[KEYRING], call.app[SETTINGS].tracking_base_url)


@router.route("POST", "/v1/sources", summary="Create an event source: a provider's webhooks in",
              scope="callbacks:manage", body=SourceIn, raw_body=True, response=SourceOut, status=201,
              tag="sources")  # fmt: skip
async def create_source(call: Call) -> Any:
    body = validate(_SOURCE_IN, call.body, tags=frozenset(ADAPTERS))
    async with call.app[DB].pool.acquire() as conn:
        row = await sources.create_source(
            conn, call.app[KEYRING], _account(call), name=body.name, provider=body.provider,
            description=body.description, config=body.config.model_dump(exclude_none=True),
        )  # fmt: skip
    return _json(call, row)


@router.route("GET", "/v1/sources", summary="List event sources", scope="callbacks:manage",
              response=SourceListOut, tag="sources")  # fmt: skip
async def list_sources(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        rows = await sources.list_sources(conn, _account(call))
    return {"sources": [_json(call, r) for r in rows]}


@router.route("GET", "/v1/sources/{sourceId}", summary="Get an event source", scope="callbacks:manage",
              response=SourceOut, tag="sources")  # fmt: skip
async def get_source(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        return _json(call, await sources.get_source(conn, _account(call), call.path("sourceId")))


@router.route("PATCH", "/v1/sources/{sourceId}", summary="Change an event source's name, description or config",
              scope="callbacks:manage", body=SourcePatch, response=SourceOut, tag="sources")  # fmt: skip
async def patch_source(call: Call) -> Any:
    changes = call.body.model_dump(exclude_unset=True)
    keyring = call.app[KEYRING]
    async with call.app[DB].pool.acquire() as conn, conn.transaction():
        row = await sources.get_source(conn, _account(call), call.path("sourceId"))
        config = None
        if "config" in changes:
            merged = {**sources.full_config(row, keyring), **changes["config"]}
            merged = {k: v for k, v in merged.items() if v is not None}
            model = ADAPTERS[row["provider"]].config_model
            config = validate(model, merged, prefix="config").model_dump(exclude_none=True)
        row = await sources.update_source(conn, keyring, row, changes, config)
    return _json(call, row)


@router.route("DELETE", "/v1/sources/{sourceId}", summary="Delete an event source (its events stay)",
              scope="callbacks:manage", status=204, tag="sources")  # fmt: skip
async def delete_source(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        await sources.delete_source(conn, _account(call), call.path("sourceId"))
    return web.Response(status=204)


@router.route("GET", "/v1/events/{eventId}/provider-event", summary="The provider's raw event behind an event",
              scope="events:read", response=ReceiptOut, tag="sources")  # fmt: skip
async def get_receipt(call: Call) -> Any:
    async with call.app[DB].read_pool.acquire() as conn:
        return await sources.receipt(conn, _account(call), call.path("eventId"))


async def _read(request: web.Request) -> bytes:
    too_large = PayloadTooLarge(f"request body is larger than {ingest.MAX_BODY} bytes")
    if request.content_length is not None and request.content_length > ingest.MAX_BODY:
        raise too_large
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large from None
    if len(raw) > ingest.MAX_BODY:
        raise too_large
    return raw


@router.route("POST", "/in/{sourceId}", summary="A provider's webhook: events in, authenticated as the provider does",
              scope=None, response=IngestOut, tag="sources", max_body=ingest.MAX_BODY,
              errors={401: "the provider's authentication is missing or wrong, stale, or replayed"})  # fmt: skip
async def ingest_events(call: Call) -> Any:
    app, settings = call.app, call.app[SETTINGS]
    source = await ingest.load_source(app[DB].pool, call.path("sourceId"))
    provider = source["provider"]
    metrics = app[METRICS]
    request = Request(
        headers=call.request.headers, body=await _read(call.request),
        config=sources.full_config(source, app[KEYRING]), received_at=time.time(), tolerance=settings.source_tolerance,
    )  # fmt: skip
    try:
        received = await ingest.authenticate(source, request, app[SOURCE_FETCHER])
        if received.nonce is not None:
            await ingest.remember_nonce(app[DB].pool, source["id"], received.nonce)
    except Refused as refusal:
        metrics.inbound_refused.labels(provider, refusal.reason).inc()
        log.warning("provider request refused", source=sources.source_id(source["id"]), provider=provider,
                    reason=refusal.reason, detail=refusal.message)  # fmt: skip
        raise Unauthorized(refusal.message) from None
    except Unreadable as exc:
        raise InvalidRequest(str(exc), code="invalid_json") from None
    try:
        outcome = await _record(call, source, received)
    except BaseException:
        if received.nonce is not None:  # not recorded: the provider's retry must not look like a replay
            await ingest.forget_nonce(app[DB].pool, source["id"], received.nonce)
        raise
    for label, n in (("recorded", outcome.recorded), ("duplicate", outcome.duplicates)):
        metrics.inbound_events.labels(provider, label).inc(n)
    for raw_type in outcome.ignored:
        metrics.inbound_events.labels(provider, "ignored").inc()
        log.info("provider event ignored", provider=provider, raw_type=raw_type)
    return {"received": len(received.events), "recorded": outcome.recorded, "duplicates": outcome.duplicates,
            "ignored": len(outcome.ignored)}  # fmt: skip


async def _record(call: Call, source: Any, received: Received) -> ingest.Outcome:
    outcome = ingest.Outcome(source["provider"])
    wanted = [e for e in received.events if e.type is not None]
    outcome.ignored = [e.raw_type for e in received.events if e.type is None]
    if not wanted:
        return outcome
    async with call.app[DB].pool.acquire() as conn:
        keys = await ingest.correlate(conn, source["account_id"], wanted)
    batch = ingest.Batch(source["account_id"], source["id"], ingest.to_events(source, wanted, keys),
                         [ingest.storable(e.raw) for e in wanted])  # fmt: skip
    _, created = await call.app[INBOUND_WRITER].write(
        batch, items=len(batch.events), nbytes=call.request.content_length or 0
    )
    outcome.recorded, outcome.duplicates = created, len(batch.events) - created
    return outcome
