"""Validation rules of the definition and send request bodies, one test per rule."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from dispatcher.sending.models import (
    BatchSendRequest,
    DefinitionContent,
    DefinitionCreate,
    DefinitionOptions,
    DefinitionPatch,
    FieldError,
    SendRequest,
    field_errors,
    validate_batch,
    validate_message_key,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def send(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"definitionKey": "welcome", "recipient": {"to": "ada@example.com"}}
    body.update(fields)
    return body


def errors_of(model: type, body: Any) -> list[FieldError]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return field_errors(info.value)


def only_error(model: type, body: Any) -> FieldError:
    errors = errors_of(model, body)
    assert len(errors) == 1, errors
    return errors[0]


# --- definitions -------------------------------------------------------------------


def definition(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "definitionKey": "order.shipped_v2",
        "name": "Order shipped",
        "content": {
            "from": "Shop <shop@example.com>",
            "subject": "Your order {{ attributes.order }} shipped",
            "html": "<p>Hi {{ recipient.to }}</p>",
        },
    }
    body.update(fields)
    return body


def test_valid_definition_gets_defaults() -> None:
    created = DefinitionCreate.model_validate(definition())
    assert created.status == "active"
    assert created.options == DefinitionOptions(tracked=True, disableMessageRetention=False, sendToUnsubscribed=False)
    assert created.content.from_ == "Shop <shop@example.com>"
    assert created.model_dump(by_alias=True)["content"]["from"] == "Shop <shop@example.com>"


def test_definition_options_are_nested_under_options() -> None:
    created = DefinitionCreate.model_validate(definition(options={"tracked": False, "sendToUnsubscribed": True}))
    assert created.options.tracked is False
    assert created.options.sendToUnsubscribed is True


@pytest.mark.parametrize("key", ["a", "A-z_0.9", "x" * 100])
def test_definition_key_accepts_letters_digits_dot_dash_underscore(key: str) -> None:
    assert DefinitionCreate.model_validate(definition(definitionKey=key)).definitionKey == key


@pytest.mark.parametrize("key", ["", "has space", "slash/key", "é", "x" * 101])
def test_definition_key_outside_charset_or_length_is_refused(key: str) -> None:
    error = only_error(DefinitionCreate, definition(definitionKey=key))
    assert (error.field, error.code) == ("definitionKey", "invalid_definition_key")


@pytest.mark.parametrize("name", ["", "x" * 201, "   "])
def test_definition_name_must_be_1_to_200_non_blank_characters(name: str) -> None:
    assert only_error(DefinitionCreate, definition(name=name)).field == "name"


def test_definition_status_must_be_active_or_inactive() -> None:
    assert only_error(DefinitionCreate, definition(status="deleted")).field == "status"


def test_definition_unknown_field_is_refused() -> None:
    error = only_error(DefinitionCreate, definition(trackLinks=True))
    assert (error.field, error.code) == ("trackLinks", "unknown_field")


@pytest.mark.parametrize("field", ["from", "replyTo", "subject", "html", "text", "preheader"])
def test_definition_content_with_liquid_syntax_error_names_the_field(field: str) -> None:
    error = only_error(DefinitionContent, {field: "Hello {{ attributes.name "})
    assert (error.field, error.code) == (field, "invalid_template")
    assert "line 1" in error.message


def test_definition_content_with_unknown_liquid_filter_is_refused() -> None:
    error = only_error(DefinitionContent, {"subject": "{{ attributes.x | shout }}"})
    assert "unknown filter 'shout'" in error.message


def test_definition_content_include_tag_is_refused() -> None:
    """There is no template store to include from; say so when the template is saved."""
    error = only_error(DefinitionContent, {"html": "{% include 'header' %}"})
    assert error.code == "invalid_template"


def test_definition_content_error_is_located_under_content() -> None:
    error = only_error(DefinitionCreate, definition(content={"text": "{% if %}"}))
    assert error.field == "content.text"


@pytest.mark.parametrize("value", ["not an address", "a@example.com, b@example.com"])
def test_definition_from_without_liquid_must_be_one_address(value: str) -> None:
    error = only_error(DefinitionContent, {"from": value})
    assert (error.field, error.code) == ("from", "invalid_email")


def test_definition_from_with_liquid_is_checked_only_when_rendered() -> None:
    content = DefinitionContent.model_validate({"from": "{{ attributes.sender }}"})
    assert content.from_ == "{{ attributes.sender }}"


def test_definition_from_accepts_non_ascii_display_name() -> None:
    assert DefinitionContent.model_validate({"from": "Zoë <zoe@example.com>"}).from_


def test_definition_patch_accepts_any_subset() -> None:
    patch = DefinitionPatch.model_validate({"status": "inactive", "options": {"tracked": False}})
    assert patch.model_dump(by_alias=True, exclude_unset=True) == {
        "status": "inactive",
        "options": {"tracked": False},
    }


def test_definition_patch_applies_the_same_rules() -> None:
    errors = errors_of(DefinitionPatch, {"definitionKey": "bad key", "content": {"html": "{{"}})
    assert {e.field for e in errors} == {"definitionKey", "content.html"}


@pytest.mark.parametrize("field", ["definitionKey", "name", "status", "content", "options"])
def test_definition_patch_cannot_null_a_required_field(field: str) -> None:
    error = only_error(DefinitionPatch, {field: None})
    assert (error.field, error.code) == (field, "null_not_allowed")


def test_definition_patch_can_clear_description() -> None:
    patch = DefinitionPatch.model_validate({"description": None})
    assert patch.model_dump(exclude_unset=True) == {"description": None}


# --- single send: valid cases -----------------------------------------------------------


def test_send_with_definition_key_needs_only_a_recipient() -> None:
    request = SendRequest.model_validate(send())
    assert request.recipient.to == "ada@example.com"
    assert request.queueDraft is False
    assert request.effective_send_at() is None


def test_send_without_definition_with_inline_content_is_valid() -> None:
    request = SendRequest.model_validate(
        {
            "recipient": {"to": "ada@example.com", "contactKey": "c-1", "attributes": {"n": 1}},
            "from": "Shop <shop@example.com>",
            "subject": "Hi {{ attributes.n }}",
            "text": "Body",
        }
    )
    assert request.from_ == "Shop <shop@example.com>"


def test_send_recipient_address_is_normalized() -> None:
    request = SendRequest.model_validate(send(recipient={"to": "Ada@EXAMPLE.com"}))
    assert request.recipient.to == "Ada@example.com"


def test_send_content_overrides_definition_content() -> None:
    request = SendRequest.model_validate(send(subject="Override"))
    stored = DefinitionContent.model_validate({"from": "a@example.com", "subject": "Stored", "text": "T"})
    merged = request.resolve_content(stored)
    assert (merged.subject, merged.from_, merged.text) == ("Override", "a@example.com", "T")
    assert merged.missing_for_send() == []


def test_send_resolve_content_reports_what_a_definition_lacks() -> None:
    merged = SendRequest.model_validate(send()).resolve_content(DefinitionContent())
    assert merged.missing_for_send() == ["from", "subject", "html"]


def test_send_options_override_definition_options_only_when_given() -> None:
    request = SendRequest.model_validate(send(tracked=False))
    options = request.resolve_options(DefinitionOptions(sendToUnsubscribed=True))
    assert options == DefinitionOptions(tracked=False, disableMessageRetention=False, sendToUnsubscribed=True)


# --- single send: rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "missing"),
    [
        ({}, {"from", "subject", "html"}),
        ({"from": "a@example.com", "text": "t"}, {"subject"}),
        ({"subject": "s", "html": "<p>h</p>"}, {"from"}),
        ({"from": "a@example.com", "subject": "s"}, {"html"}),
    ],
)
def test_send_without_definition_requires_from_subject_and_a_body(body: dict[str, Any], missing: set[str]) -> None:
    errors = errors_of(SendRequest, {"recipient": {"to": "ada@example.com"}, **body})
    assert {e.field for e in errors} == missing
    assert all(e.code == "required" for e in errors)


def test_send_recipient_is_required() -> None:
    error = only_error(SendRequest, {"definitionKey": "k"})
    assert (error.field, error.code) == ("recipient", "required")


@pytest.mark.parametrize("address", ["plain", "a@b", "a@@example.com", "a b@example.com", "José@example.com"])
def test_send_invalid_recipient_address_is_refused(address: str) -> None:
    error = only_error(SendRequest, send(recipient={"to": address}))
    assert (error.field, error.code) == ("recipient.to", "invalid_email")


def test_send_invalid_bcc_address_names_its_position() -> None:
    error = only_error(SendRequest, send(bcc=["ok@example.com", "broken"]))
    assert (error.field, error.code) == ("bcc[1]", "invalid_email")


def test_send_fifteen_recipients_across_to_and_bcc_are_allowed() -> None:
    bcc = [f"b{i}@example.com" for i in range(14)]
    assert len(SendRequest.model_validate(send(bcc=bcc)).all_recipients()) == 15


def test_send_more_than_fifteen_recipients_across_to_and_bcc_is_refused() -> None:
    error = only_error(SendRequest, send(bcc=[f"b{i}@example.com" for i in range(15)]))
    assert (error.field, error.code) == ("bcc", "too_many_recipients")


@pytest.mark.parametrize("field", ["from", "replyTo"])
def test_send_invalid_from_or_reply_to_address_is_refused(field: str) -> None:
    assert only_error(SendRequest, send(**{field: "nobody"})).field == field


@pytest.mark.parametrize("field", ["from", "subject", "html", "text", "replyTo", "preheader"])
def test_send_inline_template_with_syntax_error_is_refused(field: str) -> None:
    error = only_error(SendRequest, send(**{field: "{% for x in %}"}))
    assert (error.field, error.code) == (field, "invalid_template")


def test_send_attachments_are_decoded() -> None:
    request = SendRequest.model_validate(send(attachments={"receipt.pdf": b64(b"%PDF-1.7")}))
    assert request.attachment_bytes() == {"receipt.pdf": b"%PDF-1.7"}


def test_send_attachment_base64_wrapped_in_lines_is_accepted() -> None:
    encoded = base64.encodebytes(b"x" * 200).decode()
    assert "\n" in encoded
    request = SendRequest.model_validate(send(attachments={"a.txt": encoded}))
    assert request.attachment_bytes()["a.txt"] == b"x" * 200


@pytest.mark.parametrize("content", ["not base64!", "abc", "YW=Jj"])
def test_send_attachment_that_is_not_base64_is_refused(content: str) -> None:
    error = only_error(SendRequest, send(attachments={"a.txt": content}))
    assert (error.field, error.code) == ("attachments", "invalid_attachment")


@pytest.mark.parametrize(
    "filename", ["setup.exe", "RUN.BAT", "macro.VbS", "link.lnk", "trick.pdf.exe", "trail.exe.", "dot.scr "]
)
def test_attachment_with_forbidden_extension_is_refused(filename: str) -> None:
    error = only_error(SendRequest, send(attachments={filename: b64(b"MZ")}))
    assert (error.field, error.code) == ("attachments", "forbidden_attachment")


@pytest.mark.parametrize("filename", ["../etc/passwd", "dir\\file.txt", "line\nbreak.txt", "", " "])
def test_attachment_name_must_be_a_plain_file_name(filename: str) -> None:
    error = only_error(SendRequest, send(attachments={filename: b64(b"x")}))
    assert (error.field, error.code) == ("attachments", "invalid_attachment")


def test_attachments_just_under_two_megabytes_are_accepted() -> None:
    half = b"x" * (1024 * 1024 - 1)
    request = SendRequest.model_validate(send(attachments={"a.txt": b64(half), "b.txt": b64(half)}))
    assert sum(map(len, request.attachment_bytes().values())) == 2 * 1024 * 1024 - 2


def test_attachments_totalling_two_megabytes_are_refused() -> None:
    half = b"x" * (1024 * 1024)
    error = only_error(SendRequest, send(attachments={"a.txt": b64(half), "b.txt": b64(half)}))
    assert (error.field, error.code) == ("attachments", "attachments_too_large")


@pytest.mark.parametrize(
    "name",
    ["Content-Type", "content-type", "X-MAILER", "Return-Path", "Received", "From", "bcc", "List-Unsubscribe"],
)
def test_reserved_header_is_refused_in_any_case(name: str) -> None:
    error = only_error(SendRequest, send(headers={name: "x"}))
    assert (error.field, error.code) == ("headers", "reserved_header")


@pytest.mark.parametrize("name", ["X Custom", "X:Custom", "X-Ünicode", "", "X-Tab\t"])
def test_header_name_must_be_ascii_without_spaces_or_colons(name: str) -> None:
    error = only_error(SendRequest, send(headers={name: "x"}))
    assert (error.field, error.code) == ("headers", "invalid_header")


@pytest.mark.parametrize("value", ["a\r\nBcc: victim@example.com", "a\nb", "a\rb", "café", "nul\x00", "x" * 999])
def test_header_value_must_be_single_line_ascii(value: str) -> None:
    error = only_error(SendRequest, send(headers={"X-Custom": value}))
    assert (error.field, error.code) == ("headers", "invalid_header")


def test_custom_ascii_header_is_accepted() -> None:
    request = SendRequest.model_validate(send(headers={"X-Campaign": "spring 2030", "X-Ref": "a\tb"}))
    assert request.headers == {"X-Campaign": "spring 2030", "X-Ref": "a\tb"}


def test_send_at_in_unix_seconds_is_the_effective_send_time() -> None:
    when = int((datetime.now(UTC) + timedelta(days=3)).timestamp())
    effective = SendRequest.model_validate(send(sendAt=when)).effective_send_at()
    assert effective == datetime.fromtimestamp(when, UTC)
    assert effective is not None and effective.tzinfo is not None


def test_send_at_as_rfc3339_is_converted_to_utc() -> None:
    local = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    text = local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.123456789+00:00")
    effective = SendRequest.model_validate(send(sendAt=text)).effective_send_at()
    assert effective == local.replace(microsecond=123456)
    with_offset = (local + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00")
    assert SendRequest.model_validate(send(sendAt=with_offset)).effective_send_at() == local


@pytest.mark.parametrize("value", [0, 1_000_000_000, "2001-01-01T00:00:00Z"])
def test_send_at_in_the_past_means_now(value: int | str) -> None:
    assert SendRequest.model_validate(send(sendAt=value)).effective_send_at() is None


def test_send_at_exactly_ninety_days_ahead_is_accepted() -> None:
    when = int((datetime.now(UTC) + timedelta(days=90)).timestamp()) - 5
    assert SendRequest.model_validate(send(sendAt=when)).effective_send_at() is not None


@pytest.mark.parametrize("days", [91, 365])
def test_send_at_more_than_ninety_days_ahead_is_refused(days: int) -> None:
    when = datetime.now(UTC) + timedelta(days=days)
    for value in (int(when.timestamp()), when.isoformat()):
        error = only_error(SendRequest, send(sendAt=value))
        assert (error.field, error.code) == ("sendAt", "send_at_too_far")


@pytest.mark.parametrize("value", [True, 1.5, "tomorrow", "2030-01-01", "2030-01-01T09:00:00", 10**15])
def test_send_at_must_be_unix_seconds_or_rfc3339_with_offset(value: Any) -> None:
    error = only_error(SendRequest, send(sendAt=value))
    assert (error.field, error.code) == ("sendAt", "invalid_send_at")


def test_send_unknown_field_is_refused() -> None:
    assert only_error(SendRequest, send(cc=["a@example.com"])).code == "unknown_field"


def test_send_from_is_accepted_only_under_its_json_name() -> None:
    assert only_error(SendRequest, send(from_="a@example.com")).field == "from_"


# --- message keys -------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["a", "order-42", "x" * 100, "ünïcode key"])
def test_message_key_of_1_to_100_characters_is_accepted(key: str) -> None:
    assert validate_message_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 101, "tab\tkey", "nl\n"])
def test_message_key_empty_too_long_or_with_control_characters_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="messageKey"):
        validate_message_key(key)


# --- batch --------------------------------------------------------------------------------


def test_batch_needs_definition_key_and_1_to_2000_recipients() -> None:
    assert only_error(BatchSendRequest, {"recipients": [{"to": "a@example.com"}]}).field == "definitionKey"
    assert only_error(BatchSendRequest, {"definitionKey": "k", "recipients": []}).field == "recipients"
    too_many = [{"to": f"r{i}@example.com"} for i in range(2001)]
    assert only_error(BatchSendRequest, {"definitionKey": "k", "recipients": too_many}).field == "recipients"


def test_batch_validates_each_recipient_independently() -> None:
    request = BatchSendRequest.model_validate(
        {
            "definitionKey": "welcome",
            "attributes": {"brand": "Shop", "lang": "en"},
            "recipients": [
                {"to": "a@example.com", "messageKey": "m-1", "attributes": {"lang": "fr"}},
                {"to": "not-an-address"},
                "not an object",
                {"to": "c@example.com", "messageKey": "x" * 101},
                {"to": "d@example.com", "surprise": 1},
                {"to": "e@example.com"},
            ],
        }
    )
    items = validate_batch(request)
    assert [item.index for item in items] == [0, 1, 2, 3, 4, 5]
    assert [item.ok for item in items] == [True, False, False, False, False, True]
    assert items[0].recipient is not None and items[0].recipient.messageKey == "m-1"
    assert items[0].attributes == {"brand": "Shop", "lang": "fr"}
    assert items[1].error == FieldError(
        "invalid_email", "recipients[1].to", items[1].error.message if items[1].error else ""
    )
    assert items[2].error is not None and items[2].error.field == "recipients[2]"
    assert items[3].error is not None and items[3].error.field == "recipients[3].messageKey"
    assert items[4].error is not None and items[4].error.field == "recipients[4].surprise"


def test_batch_generates_a_message_key_when_missing() -> None:
    request = BatchSendRequest.model_validate(
        {"definitionKey": "k", "recipients": [{"to": "a@example.com"}, {"to": "b@example.com"}]}
    )
    keys = [item.recipient.messageKey for item in validate_batch(request) if item.recipient]
    assert len(keys) == 2 and len(set(keys)) == 2
    assert all(key and len(key) == 32 for key in keys)


def test_batch_duplicate_message_key_is_refused_for_the_later_recipient() -> None:
    request = BatchSendRequest.model_validate(
        {
            "definitionKey": "k",
            "recipients": [
                {"to": "a@example.com", "messageKey": "same"},
                {"to": "b@example.com", "messageKey": "same"},
            ],
        }
    )
    first, second = validate_batch(request)
    assert first.ok
    assert second.error == FieldError(
        "duplicate_message_key",
        "recipients[1].messageKey",
        "messageKey is used by an earlier recipient of this batch",
    )


def test_line_wrapped_attachment_near_the_limit_is_measured_by_decoded_size() -> None:
    """Line breaks inflate the encoded text; only the decoded bytes count toward 2 MB."""
    data = b"x" * (2 * 1024 * 1024 - 1024)
    request = SendRequest.model_validate(send(attachments={"big.txt": base64.encodebytes(data).decode()}))
    assert request.attachment_bytes()["big.txt"] == data
