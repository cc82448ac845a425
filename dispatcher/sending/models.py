"""Request models for the send-definition and send API, and the rules they enforce.

Owns every check that can be made on a request body before anything is stored or
sent: key formats, address syntax, recipient and attachment limits, reserved and
unsafe headers, the scheduling window, and Liquid syntax of every template field.
Each failure is a pydantic ``ValidationError`` whose ``loc`` names the offending field
(``field_errors`` flattens it into ``FieldError(code, field, message)`` for the API).

Options of a definition are nested under ``options`` (``{"options": {"tracked": …}}``),
mirroring ``options.trackLinks`` of the Marketing Cloud API; on a send request the same
three flags are flat and, when given, override the definition.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from dispatcher.errors import error_location, field_path, vocabulary
from dispatcher.inputs import NO_CONTROL, Description, Omittable, PlainText
from dispatcher.sending.addresses import normalize_address, parse_mailbox
from dispatcher.sending.errors import TemplateError
from dispatcher.sending.templates import parse_template

__all__ = [
    "FORBIDDEN_ATTACHMENT_EXTENSIONS",
    "MAX_ATTACHMENTS_BYTES",
    "MAX_BATCH_RECIPIENTS",
    "MAX_RECIPIENTS",
    "MAX_SEND_AHEAD",
    "RESERVED_HEADERS",
    "BatchItem",
    "BatchRecipient",
    "BatchSendRequest",
    "DefinitionContent",
    "DefinitionCreate",
    "DefinitionOptions",
    "DefinitionPatch",
    "FieldError",
    "Recipient",
    "SendRequest",
    "field_errors",
    "new_message_key",
    "validate_batch",
    "validate_message_key",
]

MAX_RECIPIENTS = 15
MAX_BATCH_RECIPIENTS = 2000
MAX_ATTACHMENTS_BYTES = 2 * 1024 * 1024
MAX_SEND_AHEAD = timedelta(days=90)
MAX_MESSAGE_KEY_LENGTH = 100

FORBIDDEN_ATTACHMENT_EXTENSIONS = frozenset(
    "bat bin chm com cpl crt exe hlp hta inf ins isp jse lnk mdb msc msi msp mst pcd pif "
    "reg scr sct shs vbe vba vbs wsf wsh wsl".split()
)

# The reserved list of the reference API, plus the headers build_message sets itself:
# letting a client set those would produce duplicates or defeat bcc / unsubscribe.
RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (
        "Authentication-Results",
        "Auto-Submitted",
        "Content-Alias",
        "Content-Base",
        "Content-Disposition",
        "Content-ID",
        "Content-Identifier",
        "Content-Length",
        "Content-Transfer-Encoding",
        "Content-Type",
        "Encoding",
        "Lines",
        "Mail-System-Version",
        "Mailer",
        "Mime-Version",
        "Originating-Client",
        "Received",
        "Received-SPF",
        "Return-Path",
        "VBR-Info",
        "X-Mailer",
        "X-Report-Abuse-To",
        # set by build_message
        "From",
        "To",
        "Cc",
        "Bcc",
        "Subject",
        "Date",
        "Message-ID",
        "Reply-To",
        "Sender",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    )
)

DEFINITION_KEY_PATTERN = "^[A-Za-z0-9_.-]{1,100}$"
_DEFINITION_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_RFC3339_RE = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})")
_MAX_HEADER_VALUE = 998


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


def _error(code: str, message: str, **context: Any) -> PydanticCustomError:
    # User input goes into the context, never into the template, so braces in it
    # cannot break message formatting.
    return PydanticCustomError(code, message, context or None)


def _fail_at(title: str, errors: list[tuple[str, str, str, Any]]) -> ValidationError:
    """A ValidationError located at named fields, for rules that span several fields."""
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(type=_error(code, message), loc=(field,), input=value)
            for field, code, message, value in errors
        ],
    )


# --- scalar checks ---------------------------------------------------------------------


def validate_message_key(key: str) -> str:
    """Return ``key`` if it is a usable messageKey (1..100 characters), else raise ValueError."""
    if not isinstance(key, str) or not key:
        raise ValueError("messageKey must be a non-empty string")
    if len(key) > MAX_MESSAGE_KEY_LENGTH:
        raise ValueError(f"messageKey must be at most {MAX_MESSAGE_KEY_LENGTH} characters")
    # Keys end up in logs, URLs and webhook payloads; control characters only cause harm.
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise ValueError("messageKey must not contain control characters")
    return key


def new_message_key() -> str:
    return uuid.uuid4().hex


def _check_message_key(value: str) -> str:
    try:
        return validate_message_key(value)
    except ValueError as exc:
        raise _error("invalid_message_key", "{reason}", reason=str(exc)) from None


def _check_definition_key(value: str) -> str:
    if not _DEFINITION_KEY_RE.fullmatch(value):
        raise _error(
            "invalid_definition_key",
            "definitionKey must be 1 to 100 characters of letters, digits, '_', '.' or '-'",
        )
    return value


def _check_name(value: str) -> str:
    if not value.strip():
        raise _error("blank", "must not be blank")
    return value


def _invalid_email(value: str, exc: ValueError) -> PydanticCustomError:
    return _error(
        "invalid_email",
        "'{value}' is not a valid email address: {reason}",
        value=value,
        reason=str(exc),
    )


def _check_address(value: str) -> str:
    try:
        return normalize_address(value)
    except ValueError as exc:
        raise _invalid_email(value, exc) from None


def _has_liquid_markup(value: str) -> bool:
    return "{{" in value or "{%" in value


def _check_template(value: str, *, html: bool = False) -> str:
    try:
        parse_template(value, html=html)
    except TemplateError as exc:
        raise _error("invalid_template", "invalid Liquid template: {reason}", reason=exc.message) from None
    return value


def _check_html_template(value: str) -> str:
    return _check_template(value, html=True)


def _check_address_template(value: str) -> str:
    _check_template(value)
    # A templated address can only be checked once rendered (build_message does that).
    if not _has_liquid_markup(value):
        try:
            parse_mailbox(value)
        except ValueError as exc:
            raise _invalid_email(value, exc) from None
    return value


# email_validator refuses special-use domains (RFC 6761: test, invalid, localhost, ...), which "format: email" allows.
_SPECIAL_USE = "|".join(_any_case(d) for d in SPECIAL_USE_DOMAIN_NAMES)
EmailAddress = Annotated[
    str,
    AfterValidator(_check_address),
    Field(json_schema_extra={"format": "email", "pattern": f"^(?![\\s\\S]*[@.](?:{_SPECIAL_USE})$)"}),
]
MessageKey = Annotated[
    str,
    AfterValidator(_check_message_key),
    Field(min_length=1, max_length=MAX_MESSAGE_KEY_LENGTH, json_schema_extra={"pattern": NO_CONTROL}),
]
DefinitionKey = Annotated[
    str, AfterValidator(_check_definition_key), Field(json_schema_extra={"pattern": DEFINITION_KEY_PATTERN})
]
# Formats the document names for rules no pattern can state (see README "API"): a Liquid template, and a
# mailbox ("addr" or "Name <addr>") or a Liquid template that renders to one.
_LIQUID = Field(json_schema_extra={"format": "liquid-template"})
Template = Annotated[str, AfterValidator(_check_template), _LIQUID]
HtmlTemplate = Annotated[str, AfterValidator(_check_html_template), _LIQUID]
AddressTemplate = Annotated[
    str, AfterValidator(_check_address_template), Field(json_schema_extra={"format": "mailbox"})
]
Name = Annotated[PlainText, Field(min_length=1, max_length=200), AfterValidator(_check_name)]
Status = Literal["active", "inactive"]


class _Model(BaseModel):
    # strict: a JSON value of the wrong type (true for a number, "1" for a boolean) is refused, never coerced
    model_config = ConfigDict(extra="forbid", strict=True)


# --- definitions -----------------------------------------------------------------------


class _Content(_Model):
    """The content fields a definition provides and a send may override; each is a Liquid template."""

    from_: AddressTemplate | None = Field(default=None, alias="from")
    replyTo: AddressTemplate | None = None
    subject: Template | None = None
    html: HtmlTemplate | None = None
    text: Template | None = None
    preheader: Template | None = None


class DefinitionContent(_Content):
    """Content of a send definition."""

    def missing_for_send(self) -> list[str]:
        """Fields that must still be provided before this content can be sent."""
        missing = [name for name in ("from", "subject") if self._get(name) is None]
        if self.html is None and self.text is None:
            missing.append("html")
        return missing

    def _get(self, name: str) -> str | None:
        return self.from_ if name == "from" else getattr(self, name)


class DefinitionOptions(_Model):
    tracked: bool = True
    disableMessageRetention: bool = False
    sendToUnsubscribed: bool = False


class DefinitionCreate(_Model):
    definitionKey: DefinitionKey
    name: Name
    status: Status = "active"
    description: Description | None = None
    content: DefinitionContent
    options: DefinitionOptions = Field(default_factory=DefinitionOptions)


class DefinitionPatch(_Model):
    """Partial update: apply ``model_dump(by_alias=True, exclude_unset=True)``.

    ``description`` may be set to null to clear it; the other fields may be omitted
    but not nulled.
    """

    definitionKey: Omittable[DefinitionKey] = None
    name: Omittable[Name] = None
    status: Omittable[Status] = None
    description: Description | None = None
    content: Omittable[DefinitionContent] = None
    options: Omittable[DefinitionOptions] = None


# --- single send -----------------------------------------------------------------------


class Recipient(_Model):
    to: EmailAddress
    contactKey: str | None = None
    attributes: dict[str, Any] | None = None


def _parse_send_at(value: Any) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _error("invalid_send_at", "sendAt must be unix seconds or an RFC 3339 timestamp")
    if isinstance(value, int):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise _error("invalid_send_at", "sendAt is out of range") from None
    match = _RFC3339_RE.fullmatch(value.strip())
    if match is None:
        raise _error("invalid_send_at", "sendAt must be an RFC 3339 timestamp with offset, e.g. 2030-01-01T09:00:00Z")
    date, time, fraction, offset = match.groups()
    # fromisoformat takes at most microseconds; RFC 3339 allows any precision.
    fraction = f".{fraction[:6]}" if fraction else ""
    offset = "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(f"{date}T{time}{fraction}{offset}").astimezone(UTC)
    except (ValueError, OverflowError):
        raise _error("invalid_send_at", "sendAt is not a valid date and time") from None


def _check_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not name or any(not 33 <= ord(c) <= 126 or c == ":" for c in name):
            raise _error(
                "invalid_header",
                "header name '{name}' must be printable ASCII without spaces or colons",
                name=name,
            )
        if name.lower() in RESERVED_HEADERS:
            raise _error("reserved_header", "header '{name}' is reserved and cannot be set", name=name)
        if "\r" in value or "\n" in value:
            raise _error("invalid_header", "header '{name}' must not contain line breaks", name=name)
        if not value.isascii() or any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
            raise _error(
                "invalid_header",
                "header '{name}' value must be printable ASCII",
                name=name,
            )
        if len(value) > _MAX_HEADER_VALUE:
            raise _error(
                "invalid_header",
                "header '{name}' value is longer than {limit} characters",
                name=name,
                limit=_MAX_HEADER_VALUE,
            )
    return headers


def _strip_wrapping(content: str) -> str:
    # Tolerate MIME-style line wrapping, but nothing else that is not base64.
    return "".join(content.split())


def _decode_attachment(content: str) -> bytes:
    return base64.b64decode(_strip_wrapping(content), validate=True)


def _check_attachments(attachments: dict[str, str]) -> dict[str, str]:
    total = 0
    for filename, content in attachments.items():
        if (
            not filename.strip()
            or len(filename) > 255
            or any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in filename)
        ):
            raise _error(
                "invalid_attachment",
                "attachment name '{filename}' must be a plain file name",
                filename=filename,
            )
        # Windows ignores trailing dots and spaces, so "x.exe." would still run as .exe.
        stem = filename.rstrip(". ")
        extension = stem.rsplit(".", 1)[1].lower() if "." in stem else ""
        if extension in FORBIDDEN_ATTACHMENT_EXTENSIONS:
            raise _error(
                "forbidden_attachment",
                "attachments of type .{extension} are not allowed ('{filename}')",
                extension=extension,
                filename=filename,
            )
        clean = _strip_wrapping(content)
        # Refuse before decoding when the encoded length alone proves the limit is exceeded.
        if total + (len(clean) * 3 // 4) - 2 >= MAX_ATTACHMENTS_BYTES:
            raise _attachments_too_large()
        try:
            total += len(base64.b64decode(clean, validate=True))
        except (binascii.Error, ValueError):
            raise _error(
                "invalid_attachment", "attachment '{filename}' is not valid base64", filename=filename
            ) from None
        if total >= MAX_ATTACHMENTS_BYTES:
            raise _attachments_too_large()
    return attachments


def _attachments_too_large() -> PydanticCustomError:
    return _error("attachments_too_large", "attachments must total less than 2 MB once decoded")


# What _check_headers and _check_attachments enforce, as the document states it (the 2 MB total aside).
_HEADERS_SCHEMA: dict[str, Any] = {
    "propertyNames": {"pattern": f"^(?!(?:{'|'.join(_any_case(h) for h in sorted(RESERVED_HEADERS))})$)[!-9;-~]+$"},
    "additionalProperties": {"type": "string", "pattern": "^[\\t -~]*$", "maxLength": _MAX_HEADER_VALUE},
}
_EXTENSIONS = "|".join(_any_case(e) for e in sorted(FORBIDDEN_ATTACHMENT_EXTENSIONS))
_ATTACHMENTS_SCHEMA: dict[str, Any] = {
    "propertyNames": {
        "pattern": (
            "^(?=[\\s\\S]*[^ \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000])"
            f"(?![\\s\\S]*\\.(?:{_EXTENSIONS})[. ]*$)[^/\\\\\\u0000-\\u001f\\u007f]*$"
        ),
        "maxLength": 255,
    },
    "additionalProperties": {
        "type": "string",
        "contentEncoding": "base64",
        "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
    },
}


def _present(*names: str) -> dict[str, Any]:
    return {"required": list(names), "properties": {n: {"type": "string"} for n in names}}


class SendRequest(_Content):
    """Body of ``POST /v1/messages/{messageKey}``.

    Content fields override the definition's content; the three option flags override
    its options when given (``resolve_content`` / ``resolve_options``).
    """

    definitionKey: DefinitionKey | None = None
    recipient: Recipient
    bcc: list[EmailAddress] | None = None
    headers: dict[str, str] | None = Field(None, json_schema_extra=_HEADERS_SCHEMA)
    attachments: dict[str, str] | None = Field(None, json_schema_extra=_ATTACHMENTS_SCHEMA)
    sendAt: int | str | None = Field(
        None,
        json_schema_extra={"anyOf": [{"type": "integer"}, {"type": "string", "format": "date-time"}, {"type": "null"}]},
    )
    tracked: bool | None = None
    disableMessageRetention: bool | None = None
    sendToUnsubscribed: bool | None = None
    queueDraft: bool = False

    _send_at: datetime | None = PrivateAttr(default=None)

    # Without a definition, the send itself carries from, subject, and html or text.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                _present("definitionKey"),
                {**_present("from", "subject"), "anyOf": [_present("html"), _present("text")]},
            ]
        }
    )

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else _check_headers(value)

    @field_validator("attachments")
    @classmethod
    def _valid_attachments(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        return None if value is None else _check_attachments(value)

    @field_validator("sendAt", mode="before")
    @classmethod
    def _check_send_at(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON does not tell 5 from 5.0
        when = _parse_send_at(value)
        if when - datetime.now(UTC) > MAX_SEND_AHEAD:
            raise _error("send_at_too_far", "sendAt must be at most 90 days in the future")
        return value

    @model_validator(mode="after")
    def _check_whole(self) -> SendRequest:
        if self.sendAt is not None:
            self._send_at = _parse_send_at(self.sendAt)
        if self.bcc and 1 + len(self.bcc) > MAX_RECIPIENTS:
            raise _fail_at(
                type(self).__name__,
                [
                    (
                        "bcc",
                        "too_many_recipients",
                        f"at most {MAX_RECIPIENTS} recipients across to and bcc",
                        None,
                    )
                ],
            )
        if self.definitionKey is None:
            content = self.resolve_content(None)
            missing = content.missing_for_send()
            if missing:
                raise _fail_at(
                    type(self).__name__,
                    [
                        (
                            field,
                            "required",
                            f"{'html or text' if field == 'html' else field} is required "
                            "when no definitionKey is given",
                            None,
                        )
                        for field in missing
                    ],
                )
        return self

    def effective_send_at(self, now: datetime | None = None) -> datetime | None:
        """When to send, as an aware UTC datetime; None means send now (unset or past)."""
        if self._send_at is None:
            return None
        now = now or datetime.now(UTC)
        return self._send_at if self._send_at > now else None

    def attachment_bytes(self) -> dict[str, bytes]:
        return {name: _decode_attachment(data) for name, data in (self.attachments or {}).items()}

    def all_recipients(self) -> list[str]:
        return [self.recipient.to, *(self.bcc or [])]

    def resolve_content(self, definition: DefinitionContent | None) -> DefinitionContent:
        """The definition's content with this request's content fields laid over it."""
        base = definition.model_dump(by_alias=True) if definition else {}
        overrides = {
            "from": self.from_,
            "replyTo": self.replyTo,
            "subject": self.subject,
            "html": self.html,
            "text": self.text,
            "preheader": self.preheader,
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        # Every value was validated already, on this request or on the definition.
        fields = {("from_" if k == "from" else k): v for k, v in base.items()}
        return DefinitionContent.model_construct(**fields)

    def resolve_options(self, definition: DefinitionOptions | None) -> DefinitionOptions:
        options = (definition or DefinitionOptions()).model_dump()
        for name in ("tracked", "disableMessageRetention", "sendToUnsubscribed"):
            value = getattr(self, name)
            if value is not None:
                options[name] = value
        return DefinitionOptions(**options)


# --- batch send ------------------------------------------------------------------------


class BatchRecipient(_Model):
    to: EmailAddress
    messageKey: MessageKey | None = None
    contactKey: str | None = None
    attributes: dict[str, Any] | None = None


class BatchSendRequest(_Model):
    """Body of ``POST /v1/messages``.

    Recipients are kept raw here so one bad recipient does not reject the batch;
    ``validate_batch`` checks each of them on its own.
    """

    definitionKey: DefinitionKey
    recipients: list[Any] = Field(min_length=1, max_length=MAX_BATCH_RECIPIENTS)
    attributes: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class FieldError:
    code: str
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class BatchItem:
    """Outcome of validating one batch recipient.

    Exactly one of ``recipient`` and ``error`` is set. On success ``recipient.messageKey``
    is always filled (generated when omitted) and ``attributes`` is the batch attributes
    overlaid with the recipient's own.
    """

    index: int
    recipient: BatchRecipient | None = None
    attributes: dict[str, Any] | None = None
    error: FieldError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def field_errors(exc: ValidationError, *, prefix: tuple[int | str, ...] = ()) -> list[FieldError]:
    """Flatten a ValidationError into API errors, in the API's vocabulary; ``field`` is a path like ``bcc[2]``."""
    out = []
    for err in exc.errors(include_url=False):
        code, message = vocabulary(err)
        out.append(FieldError(code=code, field=field_path(prefix + error_location(err)), message=message))
    return out


def validate_batch(request: BatchSendRequest) -> list[BatchItem]:
    """Validate each recipient independently, in order; see ``BatchItem``."""
    items: list[BatchItem] = []
    seen_keys: set[str] = set()
    shared = request.attributes or {}
    for index, raw in enumerate(request.recipients):
        prefix = ("recipients", index)
        try:
            recipient = BatchRecipient.model_validate(raw)
        except ValidationError as exc:
            items.append(BatchItem(index=index, error=field_errors(exc, prefix=prefix)[0]))
            continue
        key = recipient.messageKey or new_message_key()
        if key in seen_keys:
            items.append(
                BatchItem(
                    index=index,
                    error=FieldError(
                        "duplicate_message_key",
                        field_path((*prefix, "messageKey")),
                        "messageKey is used by an earlier recipient of this batch",
                    ),
                )
            )
            continue
        seen_keys.add(key)
        attributes = {**shared, **(recipient.attributes or {})}
        items.append(
            BatchItem(
                index=index,
                recipient=recipient.model_copy(update={"messageKey": key}),
                attributes=attributes,
            )
        )
    return items
