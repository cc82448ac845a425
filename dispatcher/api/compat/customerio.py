"""Customer.io's transactional API, `POST /v1/send/email`, translated onto the native send path: the same
checks (`sending.models.SendRequest`), the same group writer and the same sender. Its answers and errors
have Customer.io's shapes (`{"delivery_id", "queued_at"}`, `{"meta": {"error": "..."}}`).

`transactional_message_id` names a send definition by its numeric id or its definitionKey. The message's
messageKey is the `delivery_id`. `message_data` becomes the recipient's attributes and Liquid's `trigger`;
the identifiers (with the `to` address as `email` unless given) are Liquid's `customer`, and every event the
sender records for the message carries them, so a `customerio` callback echoes them.
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from dispatcher.api.keys import DB, SEND_WRITER, SETTINGS
from dispatcher.api.routing import Call, ErrorShape, Router, validate
from dispatcher.errors import DispatcherError, InvalidRequest, NotFound
from dispatcher.inputs import NO_NUL, WHOLE, Int
from dispatcher.sending import models, service
from dispatcher.sending.models import AddressTemplate, DefinitionKey, EmailAddress, HtmlTemplate, Template

router = Router()
TAG = "customerio"
MAX_ID = 2**63 - 1
# Native field names (as SendRequest reports them) as this API names them.
_FIELDS = {"definitionKey": "transactional_message_id", "recipient.to": "to", "recipient.attributes": "message_data",
           "html": "body", "text": "body_plain", "replyTo": "reply_to", "sendAt": "send_at",
           "disableMessageRetention": "disable_message_retention", "sendToUnsubscribed": "send_to_unsubscribed",
           "queueDraft": "queue_draft"}  # fmt: skip


def _error_body(err: DispatcherError) -> dict[str, Any]:
    return {"meta": {"error": f"{err.field}: {err.message}" if err.field else err.message}}


ERROR_SHAPE = ErrorShape(
    name="CustomerioError",
    schema={
        "type": "object",
        "required": ["meta"],
        "properties": {"meta": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}},
    },
    render=_error_body,
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Identifiers(_Model):
    """Exactly one of `id`, `email` and `cio_id`."""

    id: str | Int | None = None
    email: str | None = None
    cio_id: str | None = None

    model_config = ConfigDict(
        json_schema_extra={
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "id": {"anyOf": [{"type": "string", "pattern": NO_NUL}, {"type": "integer"}]},
                "email": {"type": "string", "pattern": NO_NUL},
                "cio_id": {"type": "string", "pattern": NO_NUL},
            },
        }
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Identifiers:
        given = [name for name in ("id", "email", "cio_id") if getattr(self, name) is not None]
        if len(given) != 1:
            raise PydanticCustomError("invalid_identifiers", "must hold exactly one of id, email or cio_id")
        return self

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


_BCC = {"format": "email-list", "description": "Addresses separated by commas."}
_SEND_FIELDS = models.SendRequest.model_fields


def _present(*names: str) -> dict[str, Any]:
    return {"required": list(names), "properties": {n: {"type": "string"} for n in names}}


def _send_at_schema(schema: dict[str, Any]) -> None:
    """The 90-day window as of when the document is built: the service refuses only what is later than 90 days
    from the moment of the request, so every time the document allows stays accepted."""
    schema["maximum"] = int(time.time() + models.MAX_SEND_AHEAD.total_seconds())
    schema["description"] = "Unix seconds, at most 90 days ahead; a time in the past sends now."


class SendEmail(_Model):
    """Body of `POST /v1/send/email`, as Customer.io documents it."""

    transactional_message_id: Annotated[int, Field(ge=1, le=MAX_ID), WHOLE] | DefinitionKey | None = None
    to: EmailAddress
    identifiers: Identifiers
    message_data: dict[str, Any] | None = None
    from_: AddressTemplate | None = Field(None, alias="from")
    subject: Template | None = None
    body: HtmlTemplate | None = None
    body_plain: Template | None = None
    plaintext_body: Template | None = None
    preheader: Template | None = None
    reply_to: AddressTemplate | None = None
    bcc: Annotated[str, Field(json_schema_extra=_BCC)] | None = None
    fake_bcc: Literal[False] | None = None
    headers: dict[str, str] | None = Field(None, json_schema_extra=_SEND_FIELDS["headers"].json_schema_extra)
    attachments: dict[str, str] | None = Field(None, json_schema_extra=_SEND_FIELDS["attachments"].json_schema_extra)
    send_at: Annotated[int, Field(ge=0, json_schema_extra=_send_at_schema), WHOLE] | None = None
    disable_message_retention: bool | None = None
    send_to_unsubscribed: bool | None = None
    tracked: bool | None = None
    queue_draft: bool | None = None
    disable_css_preprocessing: bool | None = None
    language: str | None = None

    # Without a template, the send itself carries from, subject, and body or body_plain.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["transactional_message_id"],
                 "properties": {"transactional_message_id": {"not": {"type": "null"}}}},
                {**_present("from", "subject"), "anyOf": [_present("body"), _present("body_plain"),
                                                          _present("plaintext_body")]},
            ]
        }
    )  # fmt: skip

    def bcc_list(self) -> list[str] | None:
        addresses = [a.strip() for a in (self.bcc or "").split(",") if a.strip()]
        return addresses or None


class SendEmailOut(BaseModel):
    delivery_id: str
    queued_at: int


def delivery_id() -> str:
    """A new messageKey in the style of Customer.io's delivery ids (28 URL-safe base64 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(21)).decode()


def _cio_field(field: str | None) -> str | None:
    if field is None:
        return None
    head = field.split("[", 1)[0]
    return _FIELDS.get(field) or _FIELDS.get(head) or head


def native_request(body: SendEmail, definition_key: str | None) -> models.SendRequest:
    """The native send this request is, validated by the native rules; errors name this API's fields."""
    ident = str(next(iter(body.identifiers.as_dict().values())))
    recipient = {"to": body.to, "contactKey": ident, "attributes": body.message_data}
    data: dict[str, Any] = {
        "definitionKey": definition_key, "recipient": {k: v for k, v in recipient.items() if v is not None},
        "from": body.from_, "subject": body.subject, "html": body.body, "text": body.body_plain or body.plaintext_body,
        "preheader": body.preheader, "replyTo": body.reply_to, "bcc": body.bcc_list(), "headers": body.headers,
        "attachments": body.attachments, "sendAt": body.send_at, "tracked": body.tracked,
        "disableMessageRetention": body.disable_message_retention, "sendToUnsubscribed": body.send_to_unsubscribed,
        "queueDraft": bool(body.queue_draft),
    }  # fmt: skip
    try:
        request: models.SendRequest = validate(models.SendRequest, {k: v for k, v in data.items() if v is not None})
    except InvalidRequest as err:
        err.field = _cio_field(err.field)
        raise
    return request


async def _definition(call: Call, account: int, ref: int | str | None) -> Any:
    if ref is None:
        return None
    async with call.app[DB].pool.acquire() as conn:
        if isinstance(ref, str):
            row = await conn.fetchrow(service.SQL["get_definition"], account, ref)
            if row is None and ref.isdigit() and int(ref) <= MAX_ID:
                ref = int(ref)  # clients send the numeric id as a string too
        else:
            row = None
        if row is None and isinstance(ref, int):
            row = await conn.fetchrow(service.SQL["definition_by_id"], account, ref)
    if row is None:
        raise NotFound(f"transactional_message_id {ref!r} is not a send definition of this account")
    return row


@router.route("POST", "/v1/send/email", summary="Send a transactional email (Customer.io's API)",
              scope="messages:send", body=SendEmail, response=SendEmailOut, status=200, tag=TAG,
              max_body=4 * 1024 * 1024, error_shape=ERROR_SHAPE)  # fmt: skip
async def send_email(call: Call) -> Any:
    assert call.principal is not None
    account, body = call.principal.account_id, call.body
    definition = await _definition(call, account, body.transactional_message_id)
    request = native_request(body, definition["definition_key"] if definition else None)
    service.check_template_limits(request, call.app[SETTINGS].render_max_value)
    try:
        service.check_content(request, definition)
    except InvalidRequest as err:
        err.field = _cio_field(err.field)
        raise
    identifiers = body.identifiers.as_dict()
    key = delivery_id()
    send = service.plan_send(key, request)
    message_data = body.message_data or {}
    compat = {
        "scope": {"trigger": message_data, "customer": {"email": body.to, **identifiers}},
        "event": {"identifiers": identifiers, "transactionalMessageId": definition["id"] if definition else 1},
    }
    send = service.NewSend(send.message_key, send.recipient, {**send.request, "compat": compat}, send.status,
                           send.send_at)  # fmt: skip
    accepted, _ = await call.app[SEND_WRITER].write(
        (account, request.definitionKey, [send]), nbytes=call.request.content_length or 0
    )
    assert key in accepted  # a fresh random key
    return {"delivery_id": key, "queued_at": int(time.time())}
