"""HTTP handlers for send definitions, sends, drafts, and the public tracking links."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from dispatcher import events
from dispatcher.api.events import MessageOut, MessageQuery, message_history
from dispatcher.api.keys import DB, KEYRING, SEND_WRITER, SETTINGS
from dispatcher.api.routing import Call, Router, json_response, validate
from dispatcher.errors import Conflict, InvalidRequest, NotFound
from dispatcher.sending import models, service, tracking
from dispatcher.sending.service import DefinitionOut

router = Router()
SEND_MAX_BODY = 4 * 1024 * 1024  # attachments may total 2 MB decoded: ~2.7 MB as base64, plus the rest
_MESSAGE_KEY = {"messageKey": models.MessageKey}  # path parameters as the handlers check them
_DEFINITION_KEY = {"definitionKey": models.DefinitionKey}
_PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


class SendOut(BaseModel):
    messageKey: str
    status: str


class BatchOut(BaseModel):
    accepted: int
    failed: int
    responses: list[dict[str, Any]]


class DefinitionListOut(BaseModel):
    definitions: list[DefinitionOut]


def _account(call: Call) -> int:
    assert call.principal is not None
    return call.principal.account_id


def _message_key(call: Call) -> str:
    try:
        return models.validate_message_key(call.path("messageKey"))
    except ValueError as exc:
        raise InvalidRequest(str(exc), field="messageKey") from None


# --- definitions -------------------------------------------------------------------------------


@router.route("POST", "/v1/definitions", summary="Create a send definition (Liquid templates)", scope="messages:send",
              body=models.DefinitionCreate, response=DefinitionOut, status=201, tag="sending")  # fmt: skip
async def create_definition(call: Call) -> Any:
    service.check_template_limits(call.body.content, call.app[SETTINGS].render_max_value, "content.")
    async with call.app[DB].pool.acquire() as conn:
        row = await service.create_definition(conn, _account(call), call.body, call.app[SETTINGS].definition_quota)
    return service.definition_json(row)


@router.route("GET", "/v1/definitions", summary="List send definitions", scope="messages:send",
              response=DefinitionListOut, tag="sending")  # fmt: skip
async def list_definitions(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        return {
            "definitions": [service.definition_json(r) for r in await service.list_definitions(conn, _account(call))]
        }


@router.route("GET", "/v1/definitions/{definitionKey}", summary="Get a send definition", scope="messages:send",
              response=DefinitionOut, tag="sending", params=_DEFINITION_KEY)  # fmt: skip
async def get_definition(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        return service.definition_json(await service.get_definition(conn, _account(call), call.path("definitionKey")))


@router.route("PATCH", "/v1/definitions/{definitionKey}", summary="Change a send definition; activating releases waiting sends",
              scope="messages:send", body=models.DefinitionPatch, response=DefinitionOut, tag="sending", params=_DEFINITION_KEY)  # fmt: skip
async def patch_definition(call: Call) -> Any:
    service.check_template_limits(call.body.content, call.app[SETTINGS].render_max_value, "content.")
    async with call.app[DB].pool.acquire() as conn:
        row = await service.update_definition(conn, _account(call), call.path("definitionKey"), call.body)
    return service.definition_json(row)


@router.route("DELETE", "/v1/definitions/{definitionKey}", summary="Delete a send definition", scope="messages:send",
              status=204, tag="sending", params=_DEFINITION_KEY)  # fmt: skip
async def delete_definition(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        await service.delete_definition(conn, _account(call), call.path("definitionKey"))
    return web.Response(status=204)


# --- sends ----------------------------------------------------------------------------------------


@router.route("POST", "/v1/messages/{messageKey:[^/]+}", summary="Send one message (202 after commit)", scope="messages:send",
              body=models.SendRequest, response=SendOut, status=202, tag="sending", max_body=SEND_MAX_BODY,
              params=_MESSAGE_KEY)  # fmt: skip
async def send_message(call: Call) -> Any:
    key = _message_key(call)
    body: models.SendRequest = call.body
    service.check_template_limits(body, call.app[SETTINGS].render_max_value)
    if body.definitionKey:
        async with call.app[DB].pool.acquire() as conn:
            definition = await service.get_definition(conn, _account(call), body.definitionKey)
        service.check_content(body, definition)
    send = service.plan_send(key, body)
    accepted, existing = await call.app[SEND_WRITER].write(
        (_account(call), body.definitionKey, [send]), nbytes=call.request.content_length or 0
    )
    if key in existing:
        raise Conflict(
            "a message with this messageKey already exists", field="messageKey", extra={"status": existing[key]}
        )
    return {"messageKey": key, "status": accepted[key]}


@router.route("POST", "/v1/messages", summary="Send to up to 2000 recipients; valid ones are accepted",
              scope="messages:send", body=models.BatchSendRequest, response=BatchOut, status=202, tag="sending")  # fmt: skip
async def send_batch(call: Call) -> Any:
    body: models.BatchSendRequest = call.body
    items = models.validate_batch(body)
    responses: list[dict[str, Any]] = [{} for _ in items]
    sends = []
    for item in items:
        if not item.ok:
            assert item.error is not None
            err = item.error
            responses[item.index] = {
                "index": item.index,
                "error": {"code": err.code, "field": err.field, "message": err.message},
            }
            continue
        assert item.recipient is not None
        request = {"definitionKey": body.definitionKey, "recipient": {
            "to": item.recipient.to, "contactKey": item.recipient.contactKey, "attributes": item.attributes}}  # fmt: skip
        send = validate(models.SendRequest, request)
        sends.append(service.plan_send(item.recipient.messageKey or "", send))
        responses[item.index] = {"index": item.index, "messageKey": item.recipient.messageKey}
    async with call.app[DB].pool.acquire() as conn:
        definition = await service.get_definition(conn, _account(call), body.definitionKey)
        if sends:
            service.check_content(None, definition)
        accepted, existing = (
            await service.accept(conn, _account(call), body.definitionKey, sends) if sends else ({}, {})
        )
    for r in responses:
        key = r.get("messageKey")
        if key in accepted:
            r["status"] = accepted[key]
        elif key in existing:
            r["error"] = {"code": "conflict", "field": f"recipients[{r['index']}].messageKey",
                          "message": f"a message with this messageKey already exists ({existing[key]})"}  # fmt: skip
    ok = sum(1 for r in responses if "status" in r)
    return json_response({"accepted": ok, "failed": len(responses) - ok, "responses": responses}, 202)


@router.route("POST", "/v1/messages/{messageKey:[^/]+}/send", summary="Send a draft", scope="messages:send",
              response=SendOut, status=202, tag="sending", params=_MESSAGE_KEY)  # fmt: skip
async def send_draft(call: Call) -> Any:
    key = _message_key(call)
    async with call.app[DB].pool.acquire() as conn, conn.transaction():
        row = await service.send_draft(conn, _account(call), key)
    return {"messageKey": key, "status": row["status"]}


@router.route("DELETE", "/v1/messages/{messageKey:[^/]+}", summary="Discard a draft", scope="messages:send",
              status=204, tag="sending", params=_MESSAGE_KEY)  # fmt: skip
async def discard_draft(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        await service.discard_draft(conn, _account(call), _message_key(call))
    return web.Response(status=204)


@router.route(
    "GET", "/v1/messages/{messageKey:[^/]+}", summary="A message's status and timeline", scope="events:read",
    query=MessageQuery, response=MessageOut, tag="events", params={"messageKey": events.Key},
)  # fmt: skip
async def get_message(call: Call) -> Any:
    return await message_with_send(call, call.path("messageKey"), call.query.include)


async def message_with_send(call: Call, key: str, include: str | None) -> dict[str, Any]:
    """The history answer, with the send's own state when dispatcher sent it."""
    history = await message_history(call, key)
    async with call.app[DB].read_pool.acquire() as conn:
        msg = await service.get_message(conn, _account(call), key)
    if msg is None:
        if not history["events"]:
            raise NotFound("no such message")
        return history
    if msg["status"] in ("draft", "scheduled") or history["status"] is None:
        history["status"] = msg["status"]
    history["send"] = {
        "status": msg["status"],
        "definitionKey": msg["definition_key"],
        "recipient": msg["recipient"],
        "attempts": msg["attempts"],
        "createdAt": msg["created_at"].isoformat(),
        "sentAt": msg["sent_at"].isoformat() if msg["sent_at"] else None,
        "scheduledFor": msg["next_attempt_at"].isoformat()
        if msg["status"] == "scheduled" and msg["next_attempt_at"]
        else None,
    }
    if include == "content":
        history["content"] = msg["rendered"]  # None when retention was disabled or not sent yet
    return history


# --- tracking (no API key: the signed token is the credential) --------------------------------------


async def _track(
    request: web.Request, kind: tracking.TrackingKind, event_type: str, data: dict[str, Any]
) -> tracking.TrackingClaim:
    claim = tracking.read_token(request.app[KEYRING].tracking_key, kind, request.match_info["token"])
    if claim is None:
        raise NotFound("no such link")
    async with request.app[DB].pool.acquire() as conn, conn.transaction():
        msg = await conn.fetchrow(service.SQL["message_by_id"], claim.message_id, claim.account_id)
        if msg is None:
            raise NotFound("no such link")
        if claim.url:
            data = {"url": claim.url, **data}
        event = events.NewEvent(type=event_type, message_key=msg["message_key"], data=data,
                                definition_key=msg["definition_key"], recipient=msg["recipient"])  # fmt: skip
        await events.record_events(conn, claim.account_id, [event])
        if event_type == "unsubscribed":
            await conn.execute(service.SQL["suppress"], claim.account_id, msg["recipient"].lower(), "unsubscribed")
    return claim


def _client(request: web.Request) -> dict[str, Any]:
    data = {"userAgent": request.headers.get("User-Agent", "")[:512], "ipAddress": request.remote}
    return {k: v for k, v in data.items() if v}


@router.route("GET", "/t/o/{token}", summary="Open pixel (records `opened`)", scope=None, tag="tracking")
async def track_open(call: Call) -> Any:
    await _track(call.request, "o", "opened", _client(call.request))
    return web.Response(body=_PIXEL, content_type="image/gif", headers={"Cache-Control": "no-store"})


@router.route(
    "GET", "/t/c/{token}", summary="Tracked link (records `clicked`, 302 to the signed URL)", scope=None, tag="tracking"
)
async def track_click(call: Call) -> Any:
    claim = await _track(call.request, "c", "clicked", _client(call.request))
    assert claim.url is not None
    return web.Response(status=302, headers={"Location": claim.url, "Cache-Control": "no-store"})


_UNSUB_FORM = """<!doctype html><meta charset="utf-8"><title>Unsubscribe</title>
<form method="post"><p>Stop receiving these messages?</p><button type="submit">Unsubscribe</button></form>"""


@router.route(
    "GET", "/t/u/{token}", summary="Unsubscribe page (a form; link scanners change nothing)", scope=None, tag="tracking"
)
async def unsubscribe_page(call: Call) -> Any:
    if tracking.read_token(call.app[KEYRING].tracking_key, "u", call.path("token")) is None:
        raise NotFound("no such link")
    return web.Response(text=_UNSUB_FORM, content_type="text/html")


@router.route(
    "POST",
    "/t/u/{token}",
    summary="One-click unsubscribe (RFC 8058): records `unsubscribed`",
    scope=None,
    tag="tracking",
)
async def unsubscribe(call: Call) -> Any:
    await _track(call.request, "u", "unsubscribed", _client(call.request))
    return web.Response(text="<!doctype html><p>You are unsubscribed.</p>", content_type="text/html")
