"""HTTP handlers for event ingest and history. Thin: validate, call the domain, shape the answer."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from dispatcher import events
from dispatcher.api.keys import DB, EVENT_WRITER, METRICS
from dispatcher.api.routing import Call, Router, json_response, validate
from dispatcher.errors import NotFound
from dispatcher.events import EventOut

router = Router()
_TAGS = frozenset(events.EVENT_TYPES)
_ONE_EVENT: TypeAdapter[Any] = TypeAdapter(events.EventIn)
EventsBody = Annotated[events.EventBatchIn | events.EventIn, Field(description="One event or a batch.")]


def parse_events_body(data: Any) -> tuple[list[Any], bool]:
    if isinstance(data, dict) and "events" in data:
        return validate(events.EventBatchIn, data, tags=_TAGS).events, True
    return [validate(_ONE_EVENT, data, tags=_TAGS)], False


class EventsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: list[Literal[events.MESSAGE_EVENT_TYPES + events.OPERATIONAL_EVENT_TYPES]] | None = None  # type: ignore[valid-type]
    messageKey: events.Key | None = None
    definitionKey: events.Key | None = None
    since: events.Timestamp | None = None
    until: events.Timestamp | None = None
    limit: int = Field(100, ge=1, le=1000)
    cursor: events.Cursor | None = None


class EventListOut(BaseModel):
    events: list[EventOut]
    nextCursor: str | None


class EventBatchOut(BaseModel):
    events: list[EventOut]
    created: int


class MessageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include: Literal["content"] | None = Field(None, description="'content' adds the rendered subject and body.")


class MessageOut(BaseModel):
    messageKey: str
    status: str | None
    firstEventAt: str | None
    lastEventAt: str | None
    events: list[EventOut]


@router.route(
    "POST", "/v1/events", summary="Record one event or a batch (all or nothing)", scope="events:write",
    body=EventsBody, response=EventOut | EventBatchOut, status=201, tag="events", raw_body=True,
)  # fmt: skip
async def post_events(call: Call) -> Any:
    items, is_batch = parse_events_body(call.body)
    new = [events.NewEvent.from_api(e) for e in items]
    assert call.principal is not None
    rows, created = await call.app[EVENT_WRITER].write(
        (call.principal.account_id, new), items=len(new), nbytes=call.request.content_length or 0
    )
    counter = call.app[METRICS].events
    for e in new:
        counter.labels(e.type).inc()
    status = 201 if created else 200
    if is_batch:
        return json_response({"events": [events.event_json(r) for r in rows], "created": created}, status)
    return json_response(events.event_json(rows[0]), status)


@router.route(
    "GET", "/v1/events", summary="List events, oldest first, keyset-paginated", scope="events:read",
    query=EventsQuery, response=EventListOut, tag="events",
)  # fmt: skip
async def get_events(call: Call) -> Any:
    q: EventsQuery = call.query  # since at or after until is an empty window: no events, not an error
    assert call.principal is not None
    account_id = call.principal.account_id
    async with call.app[DB].read_pool.acquire() as conn:
        return await events.keyset_page(
            "events", q.cursor, q.limit,
            lambda after_id, limit: events.list_events(
                conn, account_id, after_id=after_id, types=q.type, message_key=q.messageKey,
                definition_key=q.definitionKey, since=q.since, until=q.until, limit=limit,
            ),
            events.event_json,
        )  # fmt: skip


async def message_history(call: Call, message_key: str) -> dict[str, Any]:
    if not 1 <= len(message_key) <= 100:
        raise NotFound("no such message")
    assert call.principal is not None
    async with call.app[DB].read_pool.acquire() as conn:
        rows = await events.message_timeline(conn, call.principal.account_id, message_key)
    return {
        "messageKey": message_key,
        "status": events.message_status([(r["type"], r["data"]) for r in rows]),
        "firstEventAt": rows[0]["occurred_at"].isoformat() if rows else None,
        "lastEventAt": rows[-1]["occurred_at"].isoformat() if rows else None,
        "events": [events.event_json(r) for r in rows],
    }
