"""Marketing Cloud's auth, Content Builder subset and Transactional Messaging API (email), translated onto the
native domain: `POST /v2/token` issues dispatcher/oauth.py access tokens, definitions are native send
definitions (their content resolved from a Content Builder asset when saved), sends are native sends, and the
status of a message is read from the same messages and events. Errors come in Marketing Cloud's shape
(api/compat/sfmc.py) with the Transactional Messaging codes where its documentation lists one."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from dispatcher import accounts, assets, oauth
from dispatcher.api.compat import sfmc
from dispatcher.api.events import message_history
from dispatcher.api.keys import DB, KEYRING, SEND_WRITER, SETTINGS
from dispatcher.api.routing import Call, ErrorShape, Router, json_response, validate
from dispatcher.errors import DispatcherError, Forbidden, InvalidRequest, NotFound, Unauthorized
from dispatcher.sending import models, service

router = Router()
TAG = "marketingcloud"
SEND_MAX_BODY = 4 * 1024 * 1024
HTML_EMAIL = {"id": 208, "name": "htmlemail", "displayName": "HTML Email"}
CST = timezone(timedelta(hours=-6))  # status timestamps: Central Standard Time, no daylight saving (as documented)
CATEGORIES = {"sent": "EmailSent", "bounced": "EmailSent", "failed": "EmailNotSent"}

# --- errors ------------------------------------------------------------------------------------------------------


class Refused(DispatcherError):
    """An error with the Transactional Messaging code its documentation gives for it."""

    def __init__(self, status: int, errorcode: int, message: str, *, field: str | None = None):
        super().__init__(message, field=field)
        self.status, self.errorcode = status, errorcode


# (field, API code) -> Transactional Messaging response code ("Transactional API Response Level Error Codes")
_FIELD_CODES = {"messageKey": 109108, "definitionKey": 109111, "to": 109121, "contactKey": 109109}
_MISSING_CODES = {"messageKey": 109104, "definitionKey": 109107, "to": 109106, "contactKey": 109105}


def _messaging_code(err: DispatcherError) -> int:
    if isinstance(err, Refused):
        return err.errorcode
    if err.status == 400 and err.field:
        last = err.field.rsplit(".", 1)[-1]
        if err.code == "unknown_field":
            return 109122
        table = _MISSING_CODES if err.code == "required" else _FIELD_CODES
        if last in table:
            return table[last]
    return sfmc.errorcode(err)


def _messaging_error(err: DispatcherError) -> dict[str, Any]:
    return {**sfmc.error_body(err), "errorcode": _messaging_code(err)}


ERRORS = ErrorShape(name=sfmc.ERRORS.name, schema=sfmc.ERRORS.schema, render=_messaging_error)
_OAUTH_CODES = {401: "invalid_client", 403: "unauthorized_client"}


def _oauth_error(err: DispatcherError) -> dict[str, Any]:
    unsupported = err.code == "invalid_choice" and err.field == "grant_type"
    code = "unsupported_grant_type" if unsupported else _OAUTH_CODES.get(err.status, "invalid_request")
    message = f"{err.field}: {err.message}" if err.field else err.message
    return {"error": code, "error_description": message, "error_uri": sfmc.DOCUMENTATION}


OAUTH_ERRORS = ErrorShape(
    name="OAuthError",
    schema={
        "type": "object",
        "required": ["error", "error_description"],
        "properties": {
            "error": {"type": "string"},
            "error_description": {"type": "string"},
            "error_uri": {"type": "string"},
        },
    },
    render=_oauth_error,
)
# Every Marketing Cloud route: its error shape, and access tokens accepted beside API keys.
MC = {"tag": TAG, "error_shape": ERRORS, "access_tokens": True}


def _account(call: Call) -> int:
    assert call.principal is not None
    return call.principal.account_id


def _request_id() -> str:
    return str(uuid.uuid4())


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


Text = Annotated[str, Field(min_length=1, max_length=200)]

# --- auth ----------------------------------------------------------------------------------------------------------


class McTokenRequest(_Strict):
    grant_type: Literal["client_credentials"]
    client_id: Text
    client_secret: Annotated[str, Field(min_length=1, max_length=200)]
    account_id: Text | int | None = None
    scope: Annotated[str, Field(max_length=2000)] | None = None


class McTokenOut(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    scope: str
    rest_instance_url: str
    soap_instance_url: str


@router.route("POST", "/v2/token", summary="OAuth2 client credentials: an access token for an API key",
              scope=None, body=McTokenRequest, response=McTokenOut, tag=TAG, error_shape=OAUTH_ERRORS,
              errors={401: "Invalid client credentials", 403: "Address or account refused"})  # fmt: skip
async def mc_token(call: Call) -> Any:
    body: McTokenRequest = call.body
    principal = await accounts.authenticate(call.app[DB].pool, body.client_secret)
    if principal is None or not oauth.credentials_match(body.client_id, body.client_secret):
        raise Unauthorized("invalid client_id or client_secret")
    if not principal.allows_ip(call.request.remote):
        raise Forbidden("this key may not be used from this address")
    if body.account_id is not None and str(body.account_id) != str(principal.account_id):
        raise Forbidden("account_id is not the account of these credentials", field="account_id")
    access, lasts = oauth.issue(oauth.token_key(call.app[KEYRING]), principal)
    base = call.app[SETTINGS].tracking_base_url.rstrip("/") + "/"
    return {"access_token": access, "token_type": "Bearer", "expires_in": lasts, "scope": " ".join(principal.scopes),
            "rest_instance_url": base, "soap_instance_url": base}  # fmt: skip


# --- Content Builder (HTML email assets) -----------------------------------------------------------------------


class McAssetType(_Strict):
    name: Literal["htmlemail"]
    id: Literal[208] | None = None


class McView(_Strict):
    content: models.Template


class McHtmlView(_Strict):
    content: models.HtmlTemplate


class McViews(_Strict):
    html: McHtmlView | None = None
    text: McView | None = None
    subjectline: McView | None = None
    preheader: McView | None = None


class McAssetCreate(_Strict):
    customerKey: Text | None = None
    name: Text
    assetType: McAssetType
    views: McViews = Field(default_factory=McViews)


class McAssetOut(BaseModel):
    id: int
    customerKey: str
    name: str
    assetType: dict[str, Any]
    views: dict[str, Any]
    createdDate: str
    modifiedDate: str
    memberId: int


_FILTER = r"^(customerKey|name) eq '[^'\x00]*'$"


class McAssetQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    page: int = Field(1, ge=1, le=100_000, alias="$page")
    pageSize: int = Field(50, ge=1, le=50, alias="$pageSize")
    filter: Annotated[str, Field(max_length=300, pattern=_FILTER)] | None = Field(
        None, alias="$filter", description="customerKey eq 'x' or name eq 'x'"
    )


class McAssetListOut(BaseModel):
    count: int
    page: int
    pageSize: int
    links: dict[str, Any]
    items: list[McAssetOut]


def asset_json(row: asyncpg.Record) -> dict[str, Any]:
    return McAssetOut(
        id=row["id"], customerKey=row["customer_key"], name=row["name"], assetType=row["asset_type"],
        views=row["views"], createdDate=row["created_at"].isoformat(), modifiedDate=row["modified_at"].isoformat(),
        memberId=row["account_id"],
    ).model_dump()  # fmt: skip


@router.route("POST", "/asset/v1/content/assets", summary="Create an HTML email asset (Content Builder subset)",
              scope="messages:send", body=McAssetCreate, response=McAssetOut, status=201, **MC)  # fmt: skip
async def mc_create_asset(call: Call) -> Any:
    body: McAssetCreate = call.body
    views = body.views.model_dump(exclude_none=True)
    async with call.app[DB].pool.acquire() as conn:
        row = await assets.create_asset(
            conn, _account(call), body.customerKey or str(uuid.uuid4()), body.name, HTML_EMAIL, views
        )
    return asset_json(row)


def _filter(expr: str | None) -> tuple[str | None, str | None]:
    """(customerKey, name) from `customerKey eq 'x'` / `name eq 'x'`, the filters this subset answers."""
    if not expr:
        return None, None
    field, _, rest = expr.strip().partition(" ")
    op, _, value = rest.strip().partition(" ")
    value = value.strip()
    if op.lower() not in ("eq", "=") or len(value) < 2 or value[0] != value[-1] or value[0] not in "'\"":
        raise InvalidRequest("only `customerKey eq 'x'` and `name eq 'x'` filters are supported", field="$filter")
    if field.lower() == "customerkey":
        return value[1:-1], None
    if field.lower() == "name":
        return None, value[1:-1]
    raise InvalidRequest("only customerKey and name can be filtered on", field="$filter")


@router.route("GET", "/asset/v1/content/assets", summary="List assets (page, pageSize, a customerKey or name filter)",
              scope="messages:send", query=McAssetQuery, response=McAssetListOut, **MC)  # fmt: skip
async def mc_list_assets(call: Call) -> Any:
    q: McAssetQuery = call.query
    key, name = _filter(q.filter)
    async with call.app[DB].pool.acquire() as conn:
        rows, total = await assets.list_assets(
            conn, _account(call), key=key, name=name, limit=q.pageSize, offset=(q.page - 1) * q.pageSize
        )
    return {"count": total, "page": q.page, "pageSize": q.pageSize, "links": {}, "items": [asset_json(r) for r in rows]}


@router.route("GET", "/asset/v1/content/assets/{id}", summary="Get an asset by id", scope="messages:send",
              response=McAssetOut, params={"id": Annotated[int, Field(ge=0, le=10**18 - 1)]}, **MC)  # fmt: skip
async def mc_get_asset(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        asset_id = call.path("id")
        if not asset_id.isascii() or not asset_id.isdigit() or len(asset_id) > 18:
            raise NotFound("no such asset")
        return asset_json(await assets.get_asset(conn, _account(call), int(asset_id)))


# --- send definitions ------------------------------------------------------------------------------------------


class McContentRef(_Strict):
    customerKey: Text


class McSubscriptions(_Strict):
    list: Text | None = None
    dataExtension: Text | None = None
    autoAddSubscriber: bool | None = None
    updateSubscriber: bool | None = None


class McOptions(_Strict):
    trackLinks: bool | None = None


class McDefinitionCreate(_Strict):
    definitionKey: models.DefinitionKey
    name: models.Name
    description: Annotated[str, Field(max_length=2000)] | None = None
    classification: models.AddressTemplate = Field(description="The sender's mailbox (no sending classifications)")
    status: Literal["active", "inactive"] = "active"
    content: McContentRef
    subscriptions: McSubscriptions = Field(default_factory=McSubscriptions)
    options: McOptions = Field(default_factory=McOptions)


class McDefinitionPatch(_Strict):
    name: models.Name | None = None
    description: Annotated[str, Field(max_length=2000)] | None = None
    classification: models.AddressTemplate | None = None
    status: Literal["active", "inactive", "deleted"] | None = None
    content: McContentRef | None = None
    subscriptions: McSubscriptions | None = None
    options: McOptions | None = None


class McDefinitionOut(BaseModel):
    requestId: str
    definitionKey: str
    definitionId: str
    name: str
    description: str | None
    classification: str | None
    status: str
    createdDate: str
    modifiedDate: str
    content: dict[str, Any]
    subscriptions: dict[str, Any]
    options: dict[str, Any]


class McDefinitionsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    page: int = Field(1, ge=1, le=100_000, alias="$page")
    pageSize: int = Field(50, ge=1, le=500, alias="$pageSize")
    status: Literal["active", "inactive"] | None = None


class McDefinitionListOut(BaseModel):
    requestId: str
    definitions: list[McDefinitionOut]
    count: int
    page: int
    pageSize: int


class McDeletedOut(BaseModel):
    requestId: str
    deletedDefinitionKey: str
    deletedDefinitionId: str
    message: str


def definition_json(row: asyncpg.Record, extras: asyncpg.Record | None) -> dict[str, Any]:
    return McDefinitionOut(
        requestId=_request_id(), definitionKey=row["definition_key"], definitionId=str(row["id"]), name=row["name"],
        description=row["description"], classification=extras["classification"] if extras else None,
        status=row["status"], createdDate=row["created_at"].isoformat(), modifiedDate=row["updated_at"].isoformat(),
        content={"customerKey": extras["asset_key"]} if extras else {},
        subscriptions=extras["subscriptions"] if extras else {},
        options={"trackLinks": row["options"].get("tracked", True)},
    ).model_dump()  # fmt: skip


async def _native_content(conn: asyncpg.Connection, account_id: int, asset_key: str, sender: str) -> dict[str, Any]:
    """The native definition content: the asset's views, sent from the classification's mailbox."""
    asset = await assets.asset_by_key(conn, account_id, asset_key)
    if asset is None:
        raise Refused(404, 30003, "no asset has this customerKey", field="content.customerKey")
    return {"from": sender, **assets.content_of(asset["views"])}


def _sender(classification: str | None) -> str:
    if not classification:
        raise Refused(400, 109123, "must be the sender's mailbox (e.g. 'Shop <shop@example.com>'): "
                      "dispatcher has no sending classifications", field="classification")  # fmt: skip
    return classification


def _native(model: Any, data: dict[str, Any]) -> Any:
    try:
        return validate(model, data)
    except InvalidRequest as exc:  # what the asset or classification gave cannot make a native definition
        raise Refused(400, 10005, exc.message, field=exc.field) from None


_DEF_KEY = {"definitionKey": Annotated[str, Field(min_length=1, max_length=100)]}


@router.route("POST", "/messaging/v1/email/definitions", summary="Create an email send definition from an asset",
              scope="messages:send", body=McDefinitionCreate, response=McDefinitionOut, status=201, **MC)  # fmt: skip
async def mc_create_definition(call: Call) -> Any:
    body: McDefinitionCreate = call.body
    account, settings = _account(call), call.app[SETTINGS]
    sender = _sender(body.classification)
    async with call.app[DB].pool.acquire() as conn, conn.transaction():
        content = await _native_content(conn, account, body.content.customerKey, sender)
        native = _native(models.DefinitionCreate, {
            "definitionKey": body.definitionKey, "name": body.name, "status": body.status,
            "description": body.description, "content": content,
            "options": {"tracked": body.options.trackLinks is not False}})  # fmt: skip
        service.check_template_limits(native.content, settings.render_max_value, "content.")
        row = await service.create_definition(conn, account, native, settings.definition_quota)
        subscriptions = body.subscriptions.model_dump(exclude_none=True)
        await assets.save_definition_extras(conn, row["id"], body.content.customerKey, subscriptions, sender)
        extras = (await assets.definition_extras(conn, [row["id"]])).get(row["id"])
    return definition_json(row, extras)


@router.route("GET", "/messaging/v1/email/definitions", summary="List email send definitions", scope="messages:send",
              query=McDefinitionsQuery, response=McDefinitionListOut, **MC)  # fmt: skip
async def mc_list_definitions(call: Call) -> Any:
    q: McDefinitionsQuery = call.query
    async with call.app[DB].pool.acquire() as conn:
        rows = [r for r in await service.list_definitions(conn, _account(call)) if q.status in (None, r["status"])]
        page = rows[(q.page - 1) * q.pageSize : q.page * q.pageSize]
        extras = await assets.definition_extras(conn, [r["id"] for r in page])
    return {"requestId": _request_id(), "definitions": [definition_json(r, extras.get(r["id"])) for r in page],
            "count": len(rows), "page": q.page, "pageSize": q.pageSize}  # fmt: skip


@router.route("GET", "/messaging/v1/email/definitions/{definitionKey}", summary="Get an email send definition",
              scope="messages:send", response=McDefinitionOut, params=_DEF_KEY, **MC)  # fmt: skip
async def mc_get_definition(call: Call) -> Any:
    async with call.app[DB].pool.acquire() as conn:
        row = await service.get_definition(conn, _account(call), call.path("definitionKey"))
        extras = (await assets.definition_extras(conn, [row["id"]])).get(row["id"])
    return definition_json(row, extras)


@router.route("PATCH", "/messaging/v1/email/definitions/{definitionKey}",
              summary="Change an email send definition; its asset is read again (status deleted deletes it)",
              scope="messages:send", body=McDefinitionPatch, response=McDefinitionOut | McDeletedOut, params=_DEF_KEY,
              **MC)  # fmt: skip
async def mc_patch_definition(call: Call) -> Any:
    body: McDefinitionPatch = call.body
    account, key = _account(call), call.path("definitionKey")
    async with call.app[DB].pool.acquire() as conn, conn.transaction():
        before = await service.get_definition(conn, account, key)
        if body.status == "deleted":
            await service.delete_definition(conn, account, key)
            return _deleted(before)
        old = (await assets.definition_extras(conn, [before["id"]])).get(before["id"])
        asset_key = body.content.customerKey if body.content else (old["asset_key"] if old else None)
        if asset_key is None:
            raise Refused(400, 10002, "is required: this definition has no asset", field="content.customerKey")
        sender = _sender(body.classification or (old["classification"] if old else None))
        changes: dict[str, Any] = {"content": await _native_content(conn, account, asset_key, sender)}
        for name in ("name", "description", "status"):
            if getattr(body, name) is not None:
                changes[name] = getattr(body, name)
        if body.options is not None and body.options.trackLinks is not None:
            changes["options"] = {**before["options"], "tracked": body.options.trackLinks}
        patch = _native(models.DefinitionPatch, changes)
        service.check_template_limits(patch.content, call.app[SETTINGS].render_max_value, "content.")
        row = await service.update_definition(conn, account, key, patch)
        subscriptions = (
            body.subscriptions.model_dump(exclude_none=True)
            if body.subscriptions
            else (old["subscriptions"] if old else {})
        )
        await assets.save_definition_extras(conn, row["id"], asset_key, subscriptions, sender)
        extras = (await assets.definition_extras(conn, [row["id"]])).get(row["id"])
    return definition_json(row, extras)


def _deleted(row: asyncpg.Record) -> dict[str, Any]:
    return {"requestId": _request_id(), "deletedDefinitionKey": row["definition_key"],
            "deletedDefinitionId": str(row["id"]), "message": "Sending definition deleted"}  # fmt: skip


@router.route("DELETE", "/messaging/v1/email/definitions/{definitionKey}", summary="Delete an email send definition",
              scope="messages:send", response=McDeletedOut, params=_DEF_KEY, **MC)  # fmt: skip
async def mc_delete_definition(call: Call) -> Any:
    account, key = _account(call), call.path("definitionKey")
    async with call.app[DB].pool.acquire() as conn, conn.transaction():
        row = await service.get_definition(conn, account, key)
        await service.delete_definition(conn, account, key)
    return _deleted(row)


# --- sends ---------------------------------------------------------------------------------------------------------


class McRecipient(_Strict):
    contactKey: Annotated[str, Field(min_length=1, max_length=200)]
    to: models.EmailAddress
    attributes: dict[str, Any] | None = None


class McSendRequest(_Strict):
    definitionKey: models.DefinitionKey
    recipient: McRecipient


class McBatchRequest(_Strict):
    definitionKey: models.DefinitionKey
    recipients: list[dict[str, Any]] = Field(min_length=1, max_length=models.MAX_BATCH_RECIPIENTS)
    attributes: dict[str, Any] | None = None


class McSendOut(BaseModel):
    requestId: str
    errorcode: int
    message: str | None = None
    responses: list[dict[str, Any]]


_MESSAGE_KEY = {"messageKey": models.MessageKey}


async def _definition(conn: asyncpg.Connection, account: int, key: str) -> asyncpg.Record:
    try:
        definition = await service.get_definition(conn, account, key)
    except NotFound:
        raise Refused(404, 109111, "no send definition has this definitionKey", field="definitionKey") from None
    service.check_content(None, definition)
    return definition


@router.route("POST", "/messaging/v1/email/messages/{messageKey:[^/]+}", summary="Send an email to one recipient",
              scope="messages:send", body=McSendRequest, response=McSendOut, status=202, max_body=SEND_MAX_BODY,
              params=_MESSAGE_KEY, **MC)  # fmt: skip
async def mc_send_message(call: Call) -> Any:
    try:
        key = models.validate_message_key(call.path("messageKey"))
    except ValueError as exc:
        raise Refused(400, 109108, str(exc), field="messageKey") from None
    body: McSendRequest = call.body
    async with call.app[DB].pool.acquire() as conn:
        await _definition(conn, _account(call), body.definitionKey)
    recipient = body.recipient.model_dump(exclude_none=True)
    native = validate(models.SendRequest, {"definitionKey": body.definitionKey, "recipient": recipient})
    service.check_template_limits(native, call.app[SETTINGS].render_max_value)
    send = _with_contact_key(service.plan_send(key, native), body.recipient.contactKey)
    accepted, _ = await call.app[SEND_WRITER].write(
        (_account(call), body.definitionKey, [send]), nbytes=call.request.content_length or 0
    )
    if key not in accepted:
        raise Refused(400, 109110, "MCMS_UTM_Validation_DuplicateMessageKey: a message with this messageKey exists",
                      field="messageKey")  # fmt: skip
    return json_response({"requestId": _request_id(), "errorcode": 0, "responses": [{"messageKey": key}]}, 202)


def _with_contact_key(send: service.NewSend, contact_key: str | None) -> service.NewSend:
    """Every event the sender records for this send carries the contactKey (ENS payloads' `subscriberKey`)."""
    if not contact_key:
        return send
    compat = {"event": {"contactKey": contact_key}}
    return service.NewSend(send.message_key, send.recipient, {**send.request, "compat": compat}, send.status,
                           send.send_at)  # fmt: skip


def _recipient_error(index: int, code: str, field: str, message: str) -> tuple[int, str]:
    err = InvalidRequest(message, field=field, code=code)
    return _messaging_code(err), f"{field}: {message}"


@router.route("POST", "/messaging/v1/email/messages", summary="Send an email to up to 2000 recipients",
              scope="messages:send", body=McBatchRequest, response=McSendOut, status=202, max_body=SEND_MAX_BODY,
              **MC)  # fmt: skip
async def mc_send_batch(call: Call) -> Any:
    body: McBatchRequest = call.body
    account = _account(call)
    native = validate(models.BatchSendRequest, body.model_dump(exclude_none=True))
    responses: list[dict[str, Any]] = []
    sends = []
    for item in models.validate_batch(native):
        raw = body.recipients[item.index]
        key = raw.get("messageKey") if isinstance(raw.get("messageKey"), str) else None
        if item.error is not None:
            code, message = _recipient_error(item.index, item.error.code, item.error.field, item.error.message)
            responses.append({"messageKey": key or models.new_message_key(), "errorcode": code, "message": message})
            continue
        assert item.recipient is not None and item.recipient.messageKey is not None
        request = {"definitionKey": body.definitionKey, "recipient": {
            "to": item.recipient.to, "contactKey": item.recipient.contactKey, "attributes": item.attributes}}  # fmt: skip
        send = service.plan_send(item.recipient.messageKey, validate(models.SendRequest, request))
        sends.append(_with_contact_key(send, item.recipient.contactKey))
        responses.append({"messageKey": item.recipient.messageKey})
    async with call.app[DB].pool.acquire() as conn:
        await _definition(conn, account, body.definitionKey)
        accepted, _ = await service.accept(conn, account, body.definitionKey, sends) if sends else ({}, {})
    for r in responses:
        if "errorcode" not in r and r["messageKey"] not in accepted:
            r |= {"errorcode": 109110, "message": "MCMS_UTM_Validation_DuplicateMessageKey: messageKey was used before"}
    failed = sum(1 for r in responses if "errorcode" in r)
    out: dict[str, Any] = {"requestId": _request_id(), "errorcode": 0, "responses": responses}
    if failed:
        out |= {"errorcode": 109001,
                "message": f"MCMS_UTM_ResponsesHasErrors: {failed} subscribers failed to queue out of {len(responses)}"}  # fmt: skip
    return json_response(out, 202)


class McStatusOut(BaseModel):
    requestId: str
    eventCategoryType: str
    timestamp: str
    compositeId: str
    info: dict[str, Any]
    statusCode: int | None = None
    statusMessage: str | None = None


@router.route("GET", "/messaging/v1/email/messages/{messageKey:[^/]+}", summary="The send status of a message",
              scope="messages:send", response=McStatusOut, params=_MESSAGE_KEY, **MC)  # fmt: skip
async def mc_message_status(call: Call) -> Any:
    key = call.path("messageKey")
    async with call.app[DB].read_pool.acquire() as conn:
        msg = await service.get_message(conn, _account(call), key) if len(key) <= 100 else None
    if msg is None:
        raise NotFound("no message has this messageKey")
    history = await message_history(call, key)
    category = CATEGORIES.get(msg["status"], "EmailQueued")
    when = msg["sent_at"] or msg["created_at"]
    out: dict[str, Any] = {}
    if category == "EmailNotSent":
        failed = [e for e in history["events"] if e["type"] == "failed"]
        data = failed[-1]["data"] if failed else {}
        out = {"statusCode": data.get("statusCode"), "statusMessage": data.get("reason")}
        when = datetime.fromisoformat(failed[-1]["occurredAt"]) if failed else when
    info = {"messageKey": key, "contactKey": (msg["request"].get("recipient") or {}).get("contactKey"),
            "to": msg["recipient"]}  # fmt: skip
    return {"requestId": _request_id(), "eventCategoryType": f"TransactionalSendEvents.{category}",
            "timestamp": when.astimezone(CST).replace(tzinfo=None).isoformat(timespec="milliseconds"),
            "compositeId": f"{msg['account_id']}.{msg['id']}",
            "info": {k: v for k, v in info.items() if v is not None},
            **{k: v for k, v in out.items() if v is not None}}  # fmt: skip
