"""Every route answers a refused request in one vocabulary: a code the README lists (never a pydantic type name,
never doubled like `invalid_invalid_email`), a message in one style (`must be …`, never pydantic's
`Input should be …`), and the innermost field at fault."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from dispatcher.runtime import create_app
from tests.conftest import Api, make_key

API_DOC = Path(__file__).parents[2] / "docs" / "api.md"
DEFINITION = {"definitionKey": "receipt", "name": "Receipt",
              "content": {"from": "shop@example.com", "subject": "Hi", "html": "<p>hi</p>"}}  # fmt: skip

# (method, path, body, expected code, expected field)
REFUSALS: list[tuple[str, str, Any, str, str | None]] = [
    ("POST", "/v1/events", {"type": "bounced", "messageKey": "m", "data": {"bounceType": "weird"}},
     "invalid_choice", "data.bounceType"),
    ("POST", "/v1/events", {"type": "bounced", "messageKey": "m", "data": {"bounceType": "hard", "smtpCode": "550"}},
     "invalid_type", "data.smtpCode"),
    ("POST", "/v1/events", {"events": [{"type": "bounced", "messageKey": "m", "data": {}}]},
     "required", "events[0].data.bounceType"),
    ("POST", "/v1/events", {"messageKey": "m"}, "required", "type"),
    ("POST", "/v1/events", {"type": "nope", "messageKey": "m"}, "invalid_choice", "type"),
    ("POST", "/v1/events", {"type": "sent", "messageKey": "m", "colour": "red"}, "unknown_field", "colour"),
    ("POST", "/v1/events", {"type": "sent", "messageKey": ""}, "too_short", "messageKey"),
    ("GET", "/v1/events?limit=abc", None, "invalid_type", "limit"),
    ("GET", "/v1/events?limit=0", None, "out_of_range", "limit"),
    ("POST", "/v1/subscriptions", {"name": "s", "callbackId": "cb_1", "eventTypes": ["nope"]},
     "invalid_choice", "eventTypes[0]"),
    ("POST", "/v1/subscriptions", {"name": "s", "callbackId": "cb_1", "eventTypes": ["sent"], "status": "on"},
     "invalid_choice", "status"),
    ("POST", "/v1/callbacks", {"name": "x", "url": "ftp://example.com/hook"}, "invalid_url", "url"),
    ("POST", "/v1/callbacks", {"name": "x\x01", "url": "http://127.0.0.1/hook"}, "invalid_character", "name"),
    ("POST", "/v1/definitions", {**DEFINITION, "content": {**DEFINITION["content"], "from": "nobody"}},
     "invalid_email", "content.from"),
    ("POST", "/v1/definitions", {**DEFINITION, "content": {**DEFINITION["content"], "subject": "{% if %}"}},
     "invalid_template", "content.subject"),
    ("POST", "/v1/messages/m-1", {"definitionKey": "receipt", "recipient": {"to": "nobody"}},
     "invalid_email", "recipient.to"),
]  # fmt: skip


def documented_codes() -> set[str]:
    text = API_DOC.read_text()
    table = text[text.index("`code` is one of:") :]
    table = (table + "\n\n")[: (table + "\n\n").index("\n\n", table.index("| Status"))]
    return set(re.findall(r"`([a-z_]+)`", table))


@pytest.fixture
async def api(database, settings, aiohttp_client) -> Api:
    client = await aiohttp_client(create_app(settings, database=database))
    return Api(client, await make_key(database, "acme", ["*"]))


@pytest.mark.parametrize(("method", "path", "body", "code", "field"), REFUSALS, ids=lambda v: str(v)[:40])
async def test_a_refused_request_names_the_innermost_field_with_a_documented_code_and_message(
    api: Api, method: str, path: str, body: Any, code: str, field: str | None
) -> None:
    status, answer = await api.call(method, path, body)
    assert status == 400, answer
    error = answer["error"]
    assert (error["code"], error.get("field")) == (code, field), error
    assert code in documented_codes()
    # one style: the message completes "<field> …", in lower case, in the service's own words
    assert not error["message"].startswith(("Input", "Value error")), error
    assert error["message"][0].islower() or error["message"][0] in "'\"", error


async def test_a_batch_send_reports_each_recipient_in_the_same_vocabulary(api: Api) -> None:
    assert (await api.post("/v1/definitions", DEFINITION))[0] == 201
    recipients = [{"to": "ann@example.com"}, {"to": "nobody"}, {"to": "bob@example.com", "colour": "red"}, {}]
    status, answer = await api.post("/v1/messages", {"definitionKey": "receipt", "recipients": recipients})
    assert status == 202, answer
    errors = [r.get("error") for r in answer["responses"]]
    assert errors[0] is None
    assert [(e["code"], e["field"]) for e in errors[1:]] == [
        ("invalid_email", "recipients[1].to"),
        ("unknown_field", "recipients[2].colour"),
        ("required", "recipients[3].to"),
    ]
    assert all(e["message"] in ("is required", "is not a known field") or "email" in e["message"] for e in errors[1:])
