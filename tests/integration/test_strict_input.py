"""Strict input: what a request may carry is what /openapi.json says, exactly.

Control characters never reach a stored URL, name or description; integers of any size survive storage and
the webhook body; JSON types are never coerced; and every refusal is one the document states, so a client
(or a fuzzer) that follows the document is never surprised by a 400."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import jsonschema_rs
import pytest

from tests.conftest import Api, setup_callback
from tests.receiver import Receiver

BIG = 123456789012345678901234567890
BIG_DATA = {"big": BIG, "negative": -BIG, "u64": 2**64 - 1, "nested": [{"n": 2**70}], "float": 1.5}


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


async def count(database: Any, table: str) -> int:
    return await database.pool.fetchval(f"SELECT count(*) FROM {table}")


async def new_callback(api: Api, name: str = "hook") -> str:
    status, cb = await api.post("/v1/callbacks", {"name": name, "url": "http://127.0.0.1:9/hook"})
    assert status == 201, cb
    return cb["callbackId"]


# --- control characters -----------------------------------------------------------------------------

HOSTILE_URLS = [
    "http://127.0.0.1:9/r1\r\nX-Injected: 1",
    "http://127.0.0.1:9/r1\nX-Injected: 1",
    "http://127.0.0.1:9/r1\rx",
    "http://127.0.0.1:9/r1\tx",
    " http://127.0.0.1:9/r1",
    "http://127.0.0.1:9/r1 ",
    "http://127.0.0.1:9/r1\t",
    "http://127.0.0.1:9/a b",
    "http://127.0.0.1:9/r1\x7f",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
async def test_callback_url_with_control_characters_or_spaces_is_400_and_never_stored(api: Api, database, url):
    status, body = await api.post("/v1/callbacks", {"name": "hook", "url": url})
    assert status == 400 and body["error"]["field"] == "url", body
    assert body["error"]["code"] and body["error"]["message"]
    assert await count(database, "callbacks") == 0
    callback_id = await new_callback(api)
    status, body = await api.patch(f"/v1/callbacks/{callback_id}", {"url": url})
    assert status == 400 and body["error"]["field"] == "url", body
    assert await database.pool.fetchval("SELECT url FROM callbacks") == "http://127.0.0.1:9/hook"


CONTROL_TEXT = ["a\r\nX-Injected: 1", "a\nb", "a\tb", "a\x1b[31mred", "a\x7fb", "a\x00b"]


@pytest.mark.parametrize("text", CONTROL_TEXT)
async def test_control_characters_in_any_name_or_description_are_400(api: Api, database, text):
    callback_id = await new_callback(api)
    status, sub = await api.post("/v1/subscriptions", {"name": "sub", "callbackId": callback_id, "eventTypes": ["*"]})
    assert status == 201, sub
    definition = {"definitionKey": "d", "name": "D", "content": {"from": "a@example.com", "subject": "s", "text": "t"}}
    status, created = await api.post("/v1/definitions", definition)
    assert status == 201, created
    attempts = [
        ("POST", "/v1/callbacks", {"name": text, "url": "http://127.0.0.1:9/h"}, "name"),
        ("POST", "/v1/callbacks", {"name": "n", "url": "http://127.0.0.1:9/h", "description": text}, "description"),
        ("PATCH", f"/v1/callbacks/{callback_id}", {"name": text}, "name"),
        ("PATCH", f"/v1/callbacks/{callback_id}", {"description": text}, "description"),
        ("POST", "/v1/subscriptions", {"name": text, "callbackId": callback_id, "eventTypes": ["*"]}, "name"),
        ("PATCH", f"/v1/subscriptions/{sub['subscriptionId']}", {"name": text}, "name"),
        ("POST", "/v1/definitions", {**definition, "definitionKey": "e", "name": text}, "name"),
        ("POST", "/v1/definitions", {**definition, "definitionKey": "e", "description": text}, "description"),
        ("PATCH", "/v1/definitions/d", {"name": text}, "name"),
        ("PATCH", "/v1/definitions/d", {"description": text}, "description"),
    ]
    for method, path, body, field in attempts:
        status, answer = await api.call(method, path, body)
        assert status == 400 and answer["error"]["field"] == field, (method, path, answer)
    rows = await database.pool.fetch(
        "SELECT name, description FROM callbacks UNION ALL SELECT name, NULL FROM subscriptions"
        " UNION ALL SELECT name, description FROM definitions"
    )
    assert [tuple(r) for r in rows] == [("hook", None), ("sub", None), ("D", None)]


async def test_unicode_line_separators_and_other_printable_text_in_names_are_kept(api: Api):
    """Only control characters are refused: right-to-left text, emoji and U+2028 are names like any other."""
    name = "\u05e9\u05dc\u05d5\u05dd \U0001f389 \u2028 \u00a0 x"
    status, cb = await api.post("/v1/callbacks", {"name": name, "url": "http://127.0.0.1:9/h", "description": name})
    assert status == 201 and (cb["name"], cb["description"]) == (name, name), cb


# --- integers beyond 64 bits ------------------------------------------------------------------------


async def test_integers_beyond_64_bits_in_event_data_are_stored_and_read_back_exactly(api: Api, database):
    raw = json.dumps({"type": "sent", "messageKey": "big", "data": BIG_DATA}).encode()
    resp = await api.client.post(
        "/v1/events", data=raw, headers={"Authorization": f"Bearer {api.key}", "Content-Type": "application/json"}
    )
    created = json.loads(await resp.read())
    assert resp.status == 201 and created["data"] == BIG_DATA, created
    assert await database.pool.fetchval("SELECT data->>'big' FROM events") == str(BIG)
    assert await database.pool.fetchval("SELECT data#>>'{nested,0,n}' FROM events") == str(2**70)
    for path in ("/v1/messages/big", "/v1/events?messageKey=big"):
        resp = await api.client.get(path, headers={"Authorization": f"Bearer {api.key}"})
        body = json.loads(await resp.read())  # the standard library keeps every integer exact
        assert resp.status == 200
        assert body["events"][0]["data"] == BIG_DATA, body


async def test_integers_beyond_64_bits_reach_the_webhook_body_exactly(api: Api, receiver: Receiver):
    await setup_callback(api, receiver)
    status, body = await api.post("/v1/events", {"type": "sent", "messageKey": "big", "data": {"n": 1}})
    assert status == 201
    raw = json.dumps({"type": "sent", "messageKey": "big", "data": BIG_DATA}).encode()
    resp = await api.client.post(
        "/v1/events", data=raw, headers={"Authorization": f"Bearer {api.key}", "Content-Type": "application/json"}
    )
    assert resp.status == 201
    received = await receiver.wait_for(2)  # two callbacks deliver in either order
    [big] = [r for r in received if "big" in json.loads(r.body)["data"]]
    data = json.loads(big.body)["data"]
    assert {k: data[k] for k in BIG_DATA} == BIG_DATA
    assert b"123456789012345678901234567890" in big.body


async def test_a_deep_body_with_a_long_number_is_400_not_500(api: Api):
    """The exact re-parse of a body holding a long number recurses once per level of nesting."""
    raw = b'{"type": "sent", "messageKey": "m", "data": {"x": ' + b"[" * 1000 + str(BIG).encode() + b"]" * 1000 + b"}}"
    resp = await api.client.post(
        "/v1/events", data=raw, headers={"Authorization": f"Bearer {api.key}", "Content-Type": "application/json"}
    )
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "too_deep", body


# --- strict types -----------------------------------------------------------------------------------

COERCIBLE = [
    ("/v1/events", {"type": "failed", "messageKey": "m", "data": {"reason": "r", "statusCode": False}}, "data.statusCode"),
    ("/v1/events", {"type": "failed", "messageKey": "m", "data": {"reason": "r", "statusCode": "4"}}, "data.statusCode"),
    ("/v1/events", {"type": "bounced", "messageKey": "m", "data": {"bounceType": "hard", "smtpCode": True}}, "data.smtpCode"),
    ("/v1/events", {"type": "failed", "messageKey": "m", "data": {"reason": "r", "statusCode": 4.5}}, "data.statusCode"),
    ("/v1/events", {"type": "sent", "messageKey": "m", "occurredAt": 1700000000}, "occurredAt"),
    ("/v1/events", {"type": "sent", "messageKey": 5}, "messageKey"),
    ("/v1/callbacks", {"name": "n", "url": "http://127.0.0.1:9/h", "maxBatchSize": True}, "maxBatchSize"),
    ("/v1/callbacks", {"name": "n", "url": "http://127.0.0.1:9/h", "maxBatchSize": "5"}, "maxBatchSize"),
    ("/v1/definitions", {"definitionKey": "d", "name": "D", "content": {"text": "t"}, "options": {"tracked": 1}},
     "options.tracked"),
    ("/v1/messages/m1", {"recipient": {"to": "a@example.com"}, "from": "a@example.com", "subject": "s", "text": "t",
                         "queueDraft": "true"}, "queueDraft"),
    ("/v1/messages/m2", {"recipient": {"to": "a@example.com"}, "from": "a@example.com", "subject": "s", "text": "t",
                         "sendAt": True}, "sendAt"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "field"), COERCIBLE)
async def test_a_json_value_of_the_wrong_type_is_refused_never_coerced(api: Api, database, path, body, field):
    status, answer = await api.post(path, body)
    assert status == 400 and answer["error"]["field"] == field, answer
    for table in ("events", "callbacks", "definitions", "messages"):
        assert await count(database, table) == 0


async def test_a_wrong_type_in_a_patch_or_recovery_window_is_refused(api: Api):
    callback_id = await new_callback(api)
    for body, field in (({"maxBatchSize": False}, "maxBatchSize"), ({"name": 1}, "name")):
        status, answer = await api.patch(f"/v1/callbacks/{callback_id}", body)
        assert status == 400 and answer["error"]["field"] == field, answer
    status, answer = await api.post(f"/v1/callbacks/{callback_id}/recover", {"since": 0})
    assert status == 400 and answer["error"]["field"] == "since", answer


# --- the document states every refusal --------------------------------------------------------------


@pytest.fixture
async def document(api: Api) -> dict[str, Any]:
    status, doc = await api.get("/openapi.json")
    assert status == 200
    return doc


def allows(doc: dict[str, Any], schema: dict[str, Any], value: Any) -> bool:
    validator = jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]}, validate_formats=True)
    return validator.is_valid(value)


def body_schema(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


def parameter_schema(doc: dict[str, Any], method: str, path: str, name: str) -> dict[str, Any]:
    [param] = [p for p in doc["paths"][path][method]["parameters"] if p["name"] == name]
    return param["schema"]


SEND = {"recipient": {"to": "a@example.com"}, "from": "a@example.com", "subject": "s", "text": "t"}
REFUSED_BODIES = [
    ("patch", "/v1/callbacks/{callbackId}", {"name": None}, "name"),
    ("patch", "/v1/callbacks/{callbackId}", {"maxBatchSize": None}, "maxBatchSize"),
    ("patch", "/v1/subscriptions/{subscriptionId}", {"status": None}, "status"),
    ("patch", "/v1/definitions/{definitionKey}", {"name": None}, "name"),
    ("post", "/v1/callbacks", {"name": "n", "url": "0"}, "url"),
    ("post", "/v1/callbacks", {"name": "n", "url": "http://u:p@127.0.0.1:9/h"}, "url"),
    ("post", "/v1/definitions", {"definitionKey": "a b", "name": "D", "content": {}}, "definitionKey"),
    ("post", "/v1/messages/{messageKey}", {**SEND, "recipient": {"to": ""}}, "recipient.to"),
    ("post", "/v1/messages/{messageKey}", {**SEND, "bcc": ["not-an-address"]}, "bcc[0]"),
    ("post", "/v1/events", {"type": "bounced", "messageKey": "a\x00b", "data": {"bounceType": "soft"}}, "messageKey"),
    ("post", "/v1/events", {"type": "sent", "messageKey": "m", "data": {"a\x00": 1}}, "data"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), REFUSED_BODIES)
async def test_a_body_the_service_refuses_is_one_the_document_refuses(api: Api, document, method, path, body, field):
    ids = {"callbackId": await new_callback(api), "definitionKey": "d", "messageKey": "m"}
    status, sub = await api.post(
        "/v1/subscriptions", {"name": "s", "callbackId": ids["callbackId"], "eventTypes": ["*"]}
    )
    ids["subscriptionId"] = sub["subscriptionId"]
    status, _ = await api.post("/v1/definitions", {"definitionKey": "d", "name": "D", "content": {}})
    assert status == 201
    status, answer = await api.call(method.upper(), path.format(**ids), body)
    assert status == 400 and answer["error"]["field"] == field, answer
    assert not allows(document, body_schema(document, method, path), body)


@pytest.mark.parametrize(
    ("method", "path", "name", "value"),
    [
        ("post", "/v1/messages/{messageKey}", "messageKey", "a\x1bb"),
        ("delete", "/v1/messages/{messageKey}", "messageKey", "a\nb"),
        ("post", "/v1/messages/{messageKey}/send", "messageKey", "a\tb"),
        ("get", "/v1/events", "cursor", "garbage"),
        ("get", "/v1/events", "cursor", "ZTox"),
        ("get", "/v1/callbacks/{callbackId}/deliveries", "cursor", "-1"),
    ],
)
async def test_a_parameter_the_service_refuses_is_one_the_document_refuses(
    api: Api, document, method, path, name, value
):
    callback_id = await new_callback(api)
    if "{" + name + "}" in path:
        url = path.replace("{" + name + "}", q(value))
    else:
        url = f"{path.format(callbackId=callback_id)}?{name}={q(value)}"
    status, answer = await api.call(
        method.upper(), url.format(callbackId=callback_id), SEND if "send" not in url else None
    )
    assert status == 400 and answer["error"]["field"] == name, answer
    assert not allows(document, parameter_schema(document, method, path, name), value)


async def test_the_cursors_the_service_hands_out_are_ones_the_document_allows(api: Api, document):
    for n in range(3):
        assert (await api.post("/v1/events", {"type": "sent", "messageKey": f"m{n}"}))[0] == 201
    status, page = await api.get("/v1/events?limit=2")
    assert status == 200 and page["nextCursor"]
    assert allows(document, parameter_schema(document, "get", "/v1/events", "cursor"), page["nextCursor"])
    status, rest = await api.get(f"/v1/events?limit=2&cursor={page['nextCursor']}")
    assert status == 200 and [e["messageKey"] for e in rest["events"]] == ["m2"]


async def test_a_time_window_that_ends_before_it_starts_is_empty_not_refused(api: Api):
    """JSON Schema cannot say `until` must follow `since`, so such a window is answered: nothing is in it."""
    assert (await api.post("/v1/events", {"type": "sent", "messageKey": "m", "occurredAt": "2026-01-01T12:00:00Z"}))[
        0
    ] == 201
    status, body = await api.get("/v1/events?since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z")
    assert status == 200 and body == {"events": [], "nextCursor": None}, body
    status, body = await api.get("/v1/events?since=2026-01-01T00:00:00Z&until=2026-01-01T00:00:00Z")
    assert status == 200 and body["events"] == []
    callback_id = await new_callback(api)
    window = {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    status, body = await api.post(f"/v1/callbacks/{callback_id}/recover", window)
    assert status == 200 and body == {"requeued": 0}, body


async def test_a_url_the_document_allows_but_this_deployment_will_not_call_is_403(api: Api, document):
    """Where a well-formed URL resolves is this deployment's policy, not the request's shape: 403, like a scope."""
    schema = body_schema(document, "post", "/v1/callbacks")
    for url in ("http://10.1.2.3/hook", "http://no-such-host.invalid/hook", "https://[fe80::1]/hook"):
        body = {"name": "n", "url": url}
        assert allows(document, schema, body)
        status, answer = await api.post("/v1/callbacks", body)
        assert status == 403 and answer["error"]["field"] == "url", answer
        assert answer["error"]["code"] in ("forbidden_address", "unresolvable_host")


async def test_an_integer_too_long_to_read_is_a_400_and_nothing_is_stored(api: Api, database):
    body = b'{"type": "sent", "messageKey": "m", "data": {"n": ' + b"9" * 5000 + b"}}"
    headers = {"Authorization": f"Bearer {api.key}", "Content-Type": "application/json"}
    resp = await api.client.post("/v1/events", data=body, headers=headers)
    status, answer = resp.status, await resp.json()
    assert status == 400 and answer["error"]["code"] == "invalid_json", answer
    assert await count(database, "events") == 0
