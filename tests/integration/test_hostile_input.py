"""Malformed and hostile input over real HTTP: every refusal is a 4xx with the JSON error shape, nothing is
stored, nothing is executed, and the service keeps answering afterwards. A 500 anywhere here is a bug."""

from __future__ import annotations

import asyncio
import copy
import io
import re
import urllib.parse
from email import message_from_bytes
from email import policy as email_policy
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import Api, wait_until

TABLES = ("accounts", "api_keys", "events", "callbacks", "subscriptions", "deliveries", "definitions", "messages")
STORED = ("events", "callbacks", "subscriptions", "deliveries", "definitions", "messages")
MIB = 1024 * 1024
SEND_LIMIT = 4 * MIB  # POST /v1/messages/{messageKey} takes attachments, so its body limit is larger
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

VALID: dict[str, tuple[str, dict[str, Any]]] = {
    "events": (
        "/v1/events",
        {
            "type": "sent",
            "messageKey": "m-1",
            "id": "client-1",
            "occurredAt": "2026-01-01T00:00:00Z",
            "definitionKey": "receipt",
            "recipient": "a@example.com",
            "data": {"k": "v"},
        },
    ),
    "event-batch": ("/v1/events", {"events": [{"type": "sent", "messageKey": "m-1"}]}),
    "callbacks": (
        "/v1/callbacks",
        {"name": "hook", "url": "http://127.0.0.1:9/hook", "maxBatchSize": 1, "description": "d"},
    ),
    "subscriptions": (
        "/v1/subscriptions",
        {
            "name": "sub",
            "callbackId": "CALLBACK",
            "eventTypes": ["sent"],
            "filters": {"definitionKey": "x"},
            "status": "active",
        },
    ),
    "messages": (
        "/v1/messages/hostile-1",
        {
            "recipient": {"to": "a@example.com", "contactKey": "c-1", "attributes": {"name": "A"}},
            "from": "Shop <shop@example.com>",
            "subject": "Hello",
            "html": "<p>Hi</p>",
            "text": "Hi",
            "headers": {"X-Tag": "t"},
            "bcc": ["b@example.com"],
            "tracked": False,
            "queueDraft": True,
        },
    ),
    "definitions": (
        "/v1/definitions",
        {
            "definitionKey": "receipt",
            "name": "Receipt",
            "status": "active",
            "description": "d",
            "content": {"from": "Shop <shop@example.com>", "subject": "Hello", "text": "Hi"},
            "options": {"tracked": False},
        },
    ),
}
BODY_ENDPOINTS = ["events", "callbacks", "subscriptions", "messages", "definitions"]


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture
async def callback_id(api: Api) -> str:
    """A real (unverified) callback, so subscription bodies get past the callback lookup."""
    status, cb = await api.post("/v1/callbacks", {"name": "target", "url": "http://127.0.0.1:9/hook"})
    assert status == 201, cb
    return cb["callbackId"]


def target(name: str, callback_id: str) -> tuple[str, dict[str, Any]]:
    path, body = VALID[name]
    body = copy.deepcopy(body)
    if name == "subscriptions":
        body["callbackId"] = callback_id
    return path, body


def with_field(body: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    *parents, last = dotted.split(".")
    node = body
    for p in parents:
        node = node[p]
    node[last] = value
    return body


async def send_raw(
    api: Api, method: str, path: str, data: Any, content_type: str | None = "application/json", **headers: str
) -> tuple[int, Any]:
    h = {"Authorization": f"Bearer {api.key}", **headers}
    if content_type is not None:
        h["Content-Type"] = content_type
    resp = await api.client.request(method, path, data=data, headers=h)
    body = await resp.json() if resp.content_type == "application/json" else await resp.text()
    return resp.status, body


def assert_error(status: int, body: Any, *expected: int) -> dict[str, Any]:
    assert status in expected, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) <= {"code", "message", "field"}, err
    assert isinstance(err["code"], str) and err["code"], err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err.get("field", ""), str), err
    return err


async def counts(database: Any) -> dict[str, int]:
    return {t: await database.pool.fetchval(f"SELECT count(*) FROM {t}") for t in STORED}


async def assert_tables_intact(database: Any) -> None:
    present = await database.pool.fetchval(
        "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = ANY($1::text[])",
        list(TABLES),
    )
    assert present == len(TABLES)
    assert await database.pool.fetchval("SELECT count(*) FROM accounts") >= 1
    assert await database.pool.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL") >= 1


async def assert_still_serving(api: Api) -> None:
    status, body = await api.post("/v1/events", {"type": "sent", "messageKey": "after-the-storm"})
    assert status == 201, body
    status, body = await api.get("/v1/messages/after-the-storm")
    assert status == 200 and body["events"][-1]["messageKey"] == "after-the-storm"


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def nested(depth: int, leaf: str = "[]") -> bytes:
    return ("[" * depth + leaf + "]" * depth).encode()


def nested_objects(depth: int) -> bytes:
    return ('{"a":' * depth + "1" + "}" * depth).encode()


# --- bodies that are not JSON objects -----------------------------------------------------------

NOT_AN_OBJECT = [
    b"{not json",
    b'{"type": "sent", "messageKey": "m-1"',  # truncated
    b'{"type": "sent", "messageKey": "m-',  # truncated inside a string
    b'"just a string"',
    b"42",
    b"-1.5e3",
    b"[1, 2, 3]",
    b"[]",
    b"null",
    b"true",
    b"",
    b" ",
    b"\xef\xbb\xbf{}",  # byte order mark
    b"\xff\xfe\x00{",  # not UTF-8
    b'{"a": NaN}',
    b'{"a": 1e400}',
    b"{'single': 'quotes'}",
    b'{"a": 1,}',
    b'{"a": 1} trailing',
    b"{}",
]


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS)
async def test_body_that_is_not_a_valid_object_is_400_and_stores_nothing(api: Api, database, callback_id, endpoint):
    path, _ = target(endpoint, callback_id)
    before = await counts(database)
    for raw in NOT_AN_OBJECT:
        status, body = await send_raw(api, "POST", path, raw)
        assert_error(status, body, 400)
    assert await counts(database) == before
    await assert_still_serving(api)


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS)
async def test_lone_surrogates_sent_as_escaped_json_text_are_400(api: Api, database, callback_id, endpoint):
    path, valid = target(endpoint, callback_id)
    before = await counts(database)
    for escaped in (b'"\\ud800"', b'"\\udfff"', b'"x\\ud800y"', b'"\\ud800\\u0041"', b'"\\udc00\\ud800"'):
        raw = b'{"messageKey": ' + escaped + b', "name": ' + escaped + b"}"
        status, body = await send_raw(api, "POST", path, raw)
        assert_error(status, body, 400)
        # the same escape in an otherwise valid body, in its first string field
        field = next(k for k, v in valid.items() if isinstance(v, str))
        pattern = rb'"' + field.encode() + rb'": ?"[^"]*"'
        replacement = b'"' + field.encode() + b'": ' + escaped
        raw = re.sub(pattern, lambda _m, r=replacement: r, _dumps(valid), count=1)
        assert escaped in raw
        status, body = await send_raw(api, "POST", path, raw)
        assert_error(status, body, 400)
    assert await counts(database) == before
    await assert_still_serving(api)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


# --- nesting and size ---------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS)
async def test_ten_thousand_levels_of_nesting_are_400_not_500(api: Api, database, callback_id, endpoint):
    path, valid = target(endpoint, callback_id)
    before = await counts(database)
    deep_in_a_field = _dumps(valid)[:-1] + b', "extra": ' + nested(10_000) + b"}"
    for raw in (nested(10_000), nested_objects(10_000), deep_in_a_field, nested(100_000)):
        status, body = await send_raw(api, "POST", path, raw)
        assert_error(status, body, 400)
    assert await counts(database) == before
    await assert_still_serving(api)


def _deep_dict(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        node["a"] = {}
        node = node["a"]
    return root


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        pytest.param("events", "data"),
        pytest.param("messages", "recipient.attributes"),
        ("subscriptions", "filters"),
    ],
)
async def test_free_form_data_a_few_hundred_levels_deep_is_refused_or_stored_never_500(
    api: Api, database, callback_id, endpoint, field
):
    path, valid = target(endpoint, callback_id)
    status, body = await api.post(path, with_field(valid, field, _deep_dict(300)))
    assert status < 500, body
    if status >= 400:
        assert_error(status, body, 400)
    await assert_still_serving(api)


LIMITED_FIELD = {
    "events": "messageKey",
    "callbacks": "name",
    "subscriptions": "name",
    "messages": "recipient.to",
    "definitions": "name",
}


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS)
async def test_huge_string_within_the_body_limit_is_400_naming_the_field(api: Api, database, callback_id, endpoint):
    path, valid = target(endpoint, callback_id)
    field = LIMITED_FIELD[endpoint]
    before = await counts(database)
    status, body = await api.post(path, with_field(valid, field, "x" * (MIB - 4096)))
    err = assert_error(status, body, 400)
    assert err["field"] == field
    assert await counts(database) == before
    await assert_still_serving(api)


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS)
async def test_huge_string_over_the_body_limit_is_413(api: Api, database, callback_id, endpoint):
    path, valid = target(endpoint, callback_id)
    limit = SEND_LIMIT if endpoint == "messages" else MIB
    before = await counts(database)
    raw = _dumps(with_field(valid, LIMITED_FIELD[endpoint], "x" * (limit + 10)))
    status, body = await send_raw(api, "POST", path, io.BytesIO(raw))
    assert_error(status, body, 413)
    # the same size declared up front, body streamed in chunks (no reliance on Content-Length)
    status, body = await send_raw(api, "POST", path, _chunks(raw))
    assert_error(status, body, 413)
    assert await counts(database) == before
    await assert_still_serving(api)


async def _chunks(raw: bytes, size: int = 64 * 1024) -> Any:
    for i in range(0, len(raw), size):
        yield raw[i : i + size]


async def test_huge_free_form_value_within_the_limit_is_stored_and_round_trips(api: Api):
    blob = "\u00e9\U0001f389x" * 100_000  # 700 KB as UTF-8
    raw = _dumps({"type": "sent", "messageKey": "blob", "data": {"blob": blob}})
    assert MIB // 2 < len(raw) < MIB
    status, body = await send_raw(api, "POST", "/v1/events", io.BytesIO(raw))
    assert status == 201, body
    status, body = await api.get("/v1/messages/blob")
    assert status == 200 and body["events"][0]["data"]["blob"] == blob


# --- wrong types --------------------------------------------------------------------------------

STR = [1, 1.5, True, [], {}, ["x"]]
REQUIRED_STR = [*STR, None]
INT = ["five", "", 1.5, [], {}, None]
BOOL = ["maybe", [], {}, 2]
ENUM = [1, True, [], {}, "NOT-A-VALUE"]
OBJECT = ["x", 1, True, [1]]

WRONG_TYPES = [
    ("events", "type", [*ENUM, None]),
    ("events", "messageKey", REQUIRED_STR),
    ("events", "id", STR),
    ("events", "occurredAt", [True, [], {}, "yesterday", "2026-13-01T00:00:00Z", "2026-01-01T00:00:00"]),
    ("events", "definitionKey", STR),
    ("events", "recipient", STR),
    ("events", "data", OBJECT),
    ("event-batch", "events", ["x", 1, {}, None, [1], [[]], ["x"]]),
    ("callbacks", "name", REQUIRED_STR),
    ("callbacks", "url", REQUIRED_STR),
    ("callbacks", "maxBatchSize", INT),
    ("callbacks", "description", STR),
    ("subscriptions", "name", REQUIRED_STR),
    ("subscriptions", "callbackId", REQUIRED_STR),
    ("subscriptions", "eventTypes", ["sent", 1, [1], {}, [[]], None, [], ["nope"]]),
    ("subscriptions", "filters", ["x", 1, [1], {"k": []}, {"k": {}}, {"k": {"$gtt": 1}}]),
    ("subscriptions", "status", ENUM),
    ("messages", "recipient", ["a@example.com", 1, [], None]),
    ("messages", "recipient.to", REQUIRED_STR),
    ("messages", "recipient.contactKey", STR),
    ("messages", "recipient.attributes", OBJECT),
    ("messages", "from", STR),
    ("messages", "subject", STR),
    ("messages", "html", STR),
    ("messages", "text", STR),
    ("messages", "headers", ["x", [1], {"X-A": 1}, {"X-A": None}, {"X-A": ["v"]}]),
    ("messages", "attachments", ["x", [1], {"a.txt": 1}, {"a.txt": None}]),
    ("messages", "bcc", ["b@example.com", 1, [1], {}, [None]]),
    ("messages", "sendAt", [True, [], {}, 1.5, "tomorrow"]),
    ("messages", "tracked", BOOL),
    ("messages", "queueDraft", BOOL),
    ("definitions", "definitionKey", REQUIRED_STR),
    ("definitions", "name", REQUIRED_STR),
    ("definitions", "status", ENUM),
    ("definitions", "description", STR),
    ("definitions", "content", [*OBJECT, None]),
    ("definitions", "content.subject", STR),
    ("definitions", "content.from", STR),
    ("definitions", "options", OBJECT),
    ("definitions", "options.tracked", BOOL),
]


@pytest.mark.parametrize(("endpoint", "field", "values"), WRONG_TYPES, ids=[f"{e}-{f}" for e, f, _ in WRONG_TYPES])
async def test_wrong_type_in_a_field_is_400_naming_it_and_stores_nothing(
    api: Api, database, callback_id, endpoint, field, values
):
    path, valid = target(endpoint, callback_id)
    before = await counts(database)
    top = field.split(".")[0]
    for value in values:
        status, body = await api.post(path, with_field(valid, field, value))
        err = assert_error(status, body, 400)
        assert err.get("field", "").split(".")[0].split("[")[0] == top, (value, err)
    assert await counts(database) == before
    await assert_still_serving(api)


@pytest.mark.parametrize(
    "query",
    ["limit=abc", "limit=1.5", "limit=-1", "limit=99999999999999999999999", "limit=",
     "type=1", "type=SENT", "type=", "since=123abc", "since=2026-01-01T00:00:00", "since=[]", "until=%7B%7D",
     "messageKey=", "messageKey=" + "x" * 101, "definitionKey=%00", "messageKey=a%00b", "cursor=%00",
     "cursor=" + "A" * 201, "cursor=%F0%9F%8E%89", "cursor=ZTp4", "nope=1", "limit[]=1", "type[0]=sent"],
)  # fmt: skip
async def test_hostile_history_query_string_is_400(api: Api, query):
    status, body = await api.get("/v1/events?" + query)
    assert_error(status, body, 400)
    await assert_still_serving(api)


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("since=0001-01-01T00:00:00%2B01:00"),
        pytest.param("until=9999-12-31T23:59:59-01:00"),
        pytest.param(
            "cursor=ZTo5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OQ",  # base64("e:99999999999999999999999")
        ),
        "since=0001-01-01T00:00:00Z",
        "until=9999-12-31T23:59:59Z",
        "limit=1&limit=2",
        "cursor=ZTotMQ",  # base64("e:-1")
    ],
)
async def test_extreme_values_in_the_history_query_are_answered_not_500(api: Api, query):
    status, body = await api.get("/v1/events?" + query)
    assert status < 500, body
    if status >= 400:
        assert_error(status, body, 400)
    await assert_still_serving(api)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param(
            "/v1/events", {"type": "sent", "messageKey": "m", "occurredAt": "0001-01-01T00:00:00+01:00"},
        ),
        pytest.param(
            "/v1/events", {"type": "sent", "messageKey": "m", "occurredAt": "9999-12-31T23:59:59-01:00"},
        ),
        pytest.param(
            "/v1/messages/far-past",
            {"recipient": {"to": "a@example.com"}, "from": "a@example.com", "subject": "s", "text": "t",
             "sendAt": "0001-01-01T00:00:00+01:00"},
        ),
        ("/v1/messages/far-future", {"recipient": {"to": "a@example.com"}, "from": "a@example.com", "subject": "s",
                                     "text": "t", "sendAt": 10**12}),
        ("/v1/events", {"type": "sent", "messageKey": "m", "occurredAt": "0001-01-01T00:00:00Z"}),
    ],
)  # fmt: skip
async def test_extreme_dates_in_a_body_are_answered_not_500(api: Api, database, path, body):
    before = await counts(database)
    status, answer = await api.post(path, body)
    assert status < 500, answer
    if status >= 400:
        assert_error(status, answer, 400)
        assert await counts(database) == before
    await assert_still_serving(api)


# --- unicode ------------------------------------------------------------------------------------

NUL_FIELDS = [
    ("events", "messageKey"),
    ("events", "id"),
    ("events", "definitionKey"),
    ("events", "recipient"),
    ("events", "data.k"),
    ("callbacks", "name"),
    ("callbacks", "url"),
    ("callbacks", "description"),
    ("subscriptions", "name"),
    ("subscriptions", "callbackId"),
    pytest.param("subscriptions", "filters.definitionKey"),
    ("messages", "recipient.to"),
    pytest.param("messages", "recipient.contactKey"),
    pytest.param("messages", "recipient.attributes.name"),
    ("messages", "from"),
    pytest.param("messages", "subject"),
    pytest.param("messages", "text"),
    ("messages", "headers.X-Tag"),
    ("definitions", "definitionKey"),
    pytest.param("definitions", "name"),
    pytest.param("definitions", "description"),
    pytest.param("definitions", "content.subject"),
    ("definitions", "content.from"),
]


@pytest.mark.parametrize(("endpoint", "field"), NUL_FIELDS)
async def test_nul_character_in_a_string_field_is_400_and_stores_nothing(
    api: Api, database, callback_id, endpoint, field
):
    path, valid = target(endpoint, callback_id)
    before = await counts(database)
    status, body = await api.post(path, with_field(valid, field, "a\u0000b"))
    assert_error(status, body, *((400, 404) if field == "callbackId" else (400,)))  # an id that cannot exist
    assert await counts(database) == before
    await assert_still_serving(api)


async def test_nul_character_in_a_subscription_filter_key_is_400(api: Api, database, callback_id):
    _, valid = target("subscriptions", callback_id)
    before = await counts(database)
    status, body = await api.post("/v1/subscriptions", with_field(valid, "filters", {"a\u0000b": "x"}))
    assert_error(status, body, 400)
    assert await counts(database) == before


@pytest.mark.parametrize(
    "event",
    [
        {"type": "sent", "messageKey": "m", "data": {"a\u0000b": "x"}},
        pytest.param({"type": "opened", "messageKey": "m", "data": {"a\u0000b": "x"}}),
        pytest.param({"type": "opened", "messageKey": "m", "data": {"extra": "a\u0000b"}}),
        pytest.param(
            {"type": "bounced", "messageKey": "m", "data": {"bounceType": "hard", "x": ["\u0000"]}},
        ),
        {"type": "opened", "messageKey": "m", "data": {"userAgent": "a\u0000b"}},
    ],
)
async def test_nul_character_anywhere_in_event_data_is_400(api: Api, database, event):
    status, body = await api.post("/v1/events", event)
    assert_error(status, body, 400)
    assert await counts(database) == dict.fromkeys(STORED, 0)
    await assert_still_serving(api)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/v1/messages/%00"),
        pytest.param("/v1/messages/a%00b"),
        pytest.param("/v1/definitions/a%00b"),
        "/v1/callbacks/%00",
        "/v1/subscriptions/%00",
        "/v1/deliveries/%00",
    ],
)
async def test_nul_character_in_a_path_is_404_or_400(api: Api, path):
    status, body = await api.get(path)
    assert_error(status, body, 400, 404)
    await assert_still_serving(api)


TRICKY_TEXT = [
    "\u05e9\u05dc\u05d5\u05dd \u0639\u0627\u0644\u0645",  # Hebrew and Arabic, right to left
    "\u202eevil\u202c.exe",  # right-to-left override
    "a\u200bb\u200cc\u200dd\u2060e\ufeff",  # zero-width characters and a BOM inside
    "\U0001f389\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466\U0001f1fa\U0001f1f8",  # emoji sequences
    "e\u0301\u0327\u0308",  # stacked combining marks
    "\u2028line\u2029para\u0085",  # unicode line breaks
    "\U0010fffd\U000e0001\ufffd",  # last plane, tag character, replacement character
    "\\u0000 is not a NUL, \\ud800 is not a surrogate",  # escapes as literal text
]


async def roundtrip(api: Api, endpoint: str, text: str, n: int, callback_id: str) -> None:
    """Store `text` in every string field of `endpoint` that accepts it and read it back unchanged."""
    if endpoint == "events":
        key = f"{text}-{n}"[:100]
        event = {"type": "sent", "messageKey": key, "id": key, "definitionKey": key, "recipient": key,
                 "data": {text: text, "nested": [text, {"k": text}]}}  # fmt: skip
        status, body = await api.post("/v1/events", event)
        assert status == 201, body
        status, body = await api.get(f"/v1/messages/{q(key)}")
        assert status == 200, body
        [got] = body["events"]
        assert {k: got[k] for k in ("messageKey", "id", "definitionKey", "recipient", "data")} == {
            k: event[k] for k in ("messageKey", "id", "definitionKey", "recipient", "data")
        }
        status, body = await api.get(f"/v1/events?messageKey={q(key)}&definitionKey={q(key)}")
        assert status == 200 and [e["messageKey"] for e in body["events"]] == [key]
    elif endpoint == "callbacks":
        url = "http://127.0.0.1:9/hook?q=" + q(text)
        status, cb = await api.post("/v1/callbacks", {"name": text[:100], "description": text, "url": url})
        assert status == 201, cb
        status, body = await api.get(f"/v1/callbacks/{cb['callbackId']}")
        assert status == 200 and (body["name"], body["description"], body["url"]) == (text[:100], text, url)
    elif endpoint == "subscriptions":
        sub = {"name": text[:100], "callbackId": callback_id, "eventTypes": ["sent"],
               "filters": {"definitionKey": text[:200], "recipient": text[:200]}}  # fmt: skip
        status, created = await api.post("/v1/subscriptions", sub)
        assert status == 201, created
        status, body = await api.get(f"/v1/subscriptions/{created['subscriptionId']}")
        assert status == 200 and (body["name"], body["filters"]) == (sub["name"], sub["filters"])
    elif endpoint == "definitions":
        definition = {"definitionKey": f"d-{n}", "name": text[:200], "description": text,
                      "content": {"from": "Shop <shop@example.com>", "subject": text, "text": text}}  # fmt: skip
        status, created = await api.post("/v1/definitions", definition)
        assert status == 201, created
        status, body = await api.get(f"/v1/definitions/d-{n}")
        assert status == 200, body
        assert (body["name"], body["description"]) == (definition["name"], text)
        assert (body["content"]["subject"], body["content"]["text"]) == (text, text)
    elif endpoint == "messages":
        key = f"{text}-{n}"[:100]
        send = {"recipient": {"to": "a@example.com", "contactKey": text, "attributes": {text: text}},
                "from": "Shop <shop@example.com>", "subject": text, "text": text, "queueDraft": True}  # fmt: skip
        status, body = await api.post(f"/v1/messages/{q(key)}", send)
        assert status == 202, body
        assert body["messageKey"] == key
        status, body = await api.get(f"/v1/messages/{q(key)}")
        assert status == 200 and body["messageKey"] == key and body["send"]["status"] == "draft"


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS)
async def test_rtl_zero_width_and_emoji_text_round_trips_exactly(api: Api, callback_id, endpoint):
    for n, text in enumerate(TRICKY_TEXT):
        await roundtrip(api, endpoint, text, n, callback_id)
    await assert_still_serving(api)


async def test_message_key_with_braces_is_readable_by_its_path(api: Api):
    for key in ("{{ attributes.x }}", "order-{1}", "}"):
        status, _ = await api.post("/v1/events", {"type": "sent", "messageKey": key})
        assert status == 201
        status, body = await api.get(f"/v1/messages/{q(key)}")
        assert status == 200 and body["messageKey"] == key, (key, body)


# --- SQL injection ------------------------------------------------------------------------------

INJECTIONS = [
    "'; DROP TABLE events; --",
    "' OR '1'='1",
    '"; DROP TABLE callbacks; --',
    "1); DELETE FROM accounts; --",
    "x' UNION SELECT key_hash::text FROM api_keys --",
    "Robert'); DROP TABLE subscriptions;--",
    "$1 $2 %s %(name)s %%",
    "\\'; TRUNCATE messages CASCADE; --",
    "'; SELECT pg_sleep(30); --",
    "*/ DROP TABLE definitions; /*",
]


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS)
async def test_sql_injection_in_every_string_field_is_stored_literally_never_executed(
    api: Api, database, callback_id, endpoint
):
    for n, text in enumerate(INJECTIONS):
        await roundtrip(api, endpoint, text, n, callback_id)
    await assert_tables_intact(database)
    await assert_still_serving(api)


async def test_sql_injection_in_a_definition_key_is_refused(api: Api, database):
    for n, text in enumerate(INJECTIONS):
        _, valid = target("definitions", "")
        status, body = await api.post("/v1/definitions", with_field(valid, "definitionKey", text))
        assert assert_error(status, body, 400)["field"] == "definitionKey", n
        status, body = await api.get(f"/v1/definitions/{q(text)}")
        assert_error(status, body, 404, 400)
    assert await database.pool.fetchval("SELECT count(*) FROM definitions") == 0
    await assert_tables_intact(database)


async def test_sql_injection_in_query_parameters_and_paths_matches_only_literally(api: Api, database, callback_id):
    await api.post("/v1/events", {"type": "sent", "messageKey": "innocent"})
    for text in INJECTIONS:
        status, _ = await api.post("/v1/events", {"type": "opened", "messageKey": text, "definitionKey": text})
        assert status == 201
        status, body = await api.get(f"/v1/events?messageKey={q(text)}")
        assert status == 200 and [e["messageKey"] for e in body["events"]] == [text]
        status, body = await api.get(f"/v1/events?definitionKey={q(text)}&type=opened")
        assert status == 200 and [e["definitionKey"] for e in body["events"]] == [text]
        for query in (f"type={q(text)}", f"cursor={q(text)}", f"since={q(text)}", f"limit={q(text)}"):
            status, body = await api.get(f"/v1/events?{query}")
            assert_error(status, body, 400)
        status, body = await api.get(f"/v1/messages/{q(text)}")
        assert status == 200 and [e["messageKey"] for e in body["events"]] == [text]
        for path in (f"/v1/callbacks/{q(text)}", f"/v1/subscriptions/{q(text)}", f"/v1/deliveries/{q(text)}",
                     f"/v1/subscriptions?callbackId={q(text)}", f"/v1/callbacks/{callback_id}/deliveries?status={q(text)}",
                     f"/v1/callbacks/{callback_id}/attempts?outcome={q(text)}"):  # fmt: skip
            status, body = await api.get(path)
            assert_error(status, body, 400, 404)
    status, body = await api.get("/v1/events?limit=1000")
    assert len(body["events"]) == len(INJECTIONS) + 1
    await assert_tables_intact(database)
    await assert_still_serving(api)


# --- header injection ---------------------------------------------------------------------------


async def raw_http(client: Any, request: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = []
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    return status, headers, body


@pytest.mark.parametrize(
    "request_id",
    [
        b"abc\r\nX-Injected: yes",
        b"abc\rX-Injected: yes",
        b"abc\nX-Injected: yes",
        b"abc\r\n X-Injected: yes",  # obsolete line folding
        b"abc%0d%0aX-Injected:%20yes",
        b"abc\x00X-Injected: yes",
        b"abc\x0bdef",
        b"\xc3\xa9t\xc3\xa9\r\nX-Injected: yes",
        b"x" * 5000,
    ],
)
async def test_echoed_request_id_never_carries_cr_lf_or_injected_headers(api: Api, request_id):
    for path, auth in ((b"/healthz", b""), (b"/v1/events", b"Authorization: Bearer " + api.key.encode() + b"\r\n")):
        status, headers, _ = await raw_http(
            api.client,
            b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: " + request_id + b"\r\n" + auth
            + b"Connection: close\r\n\r\n",
        )  # fmt: skip
        assert status < 500
        names = [n.lower() for n, _ in headers]
        assert "x-injected" not in names
        for name, value in headers:
            assert "\r" not in value and "\n" not in value
            if name.lower() == "x-request-id":
                assert REQUEST_ID.match(value), value
    await assert_still_serving(api)


async def test_cr_lf_in_json_string_fields_is_stored_as_data_not_as_headers(api: Api):
    text = "a\r\nX-Injected: yes\r\n\r\n<html>"
    await roundtrip(api, "events", text, 0, "")  # names and URLs refuse it (test_strict_input.py)
    status, body = await api.post(
        "/v1/messages/crlf", with_field(VALID["messages"][1], "headers", {"X-Tag": "v\r\nBcc: evil@example.com"})
    )
    assert assert_error(status, body, 400)["field"].startswith("headers")
    status, body = await api.post(
        "/v1/messages/crlf", with_field(VALID["messages"][1], "headers", {"X-Tag\r\nBcc": "evil@example.com"})
    )
    assert assert_error(status, body, 400)["field"].startswith("headers")
    for path in ("/v1/messages/a%0D%0AX-Injected:%20yes", "/v1/messages/a%0Ab"):
        status, body = await api.post(path, VALID["messages"][1])
        assert assert_error(status, body, 400)["field"] == "messageKey"


async def test_cr_lf_in_a_subject_never_becomes_a_mail_header(api: Api, settings):
    send = {"recipient": {"to": "a@example.com", "attributes": {"x": "1\r\nBcc: evil2@example.com"}},
            "from": "Shop <shop@example.com>", "subject": "Hi\r\nBcc: evil@example.com\r\n\r\nbody {{ attributes.x }}",
            "text": "t"}  # fmt: skip
    status, body = await api.post("/v1/messages/crlf-subject", send)
    if status >= 400:
        assert_error(status, body, 400)
        return
    assert status == 202, body
    mail_dir = Path(settings.data_dir) / "mail"

    async def written() -> list[Path]:
        return sorted(mail_dir.rglob("*.eml")) if mail_dir.exists() else []

    [eml] = await wait_until(written)
    msg = message_from_bytes(eml.read_bytes(), policy=email_policy.default)
    assert msg["Bcc"] is None
    assert "evil" not in " ".join(msg.keys()).lower()
    assert "\r" not in str(msg["Subject"]) and "\n" not in str(msg["Subject"])
    assert msg.get_all("To") == ["a@example.com"]


# --- content type -------------------------------------------------------------------------------

WRONG_CONTENT_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "application/jsonx",
    "application/json-patch+json",
    "text/json",
    "",
    None,  # aiohttp sends application/octet-stream
]


@pytest.mark.parametrize("endpoint", BODY_ENDPOINTS)
async def test_wrong_content_type_is_415_even_with_a_valid_json_body(api: Api, database, callback_id, endpoint):
    path, valid = target(endpoint, callback_id)
    before = await counts(database)
    for content_type in WRONG_CONTENT_TYPES:
        status, body = await send_raw(api, "POST", path, _dumps(valid), content_type)
        err = assert_error(status, body, 415)
        assert err["code"] == "unsupported_media_type"
    assert await counts(database) == before
    status, body = await send_raw(api, "POST", path, _dumps(valid), "application/json; charset=utf-8")
    assert status in (200, 201, 202), body


# --- authorization ------------------------------------------------------------------------------


async def test_malformed_authorization_headers_are_401_not_500(api: Api, database):
    key = api.key
    refused = [
        key,  # no scheme
        f"Basic {key}",
        f"Token {key}",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        f"Bearer{key}",
        f"Bearer\t{key}",
        f"Bearer {key} extra",
        f"Bearer {key}{key}",
        f"Bearer {key[:-1]}",
        "Bearer " + "k" * 7000,
        "Bearer dk_" + "\u00e9" * 100,
        "Bearer ' OR '1'='1",
        f"Bearer, Bearer {key}",
    ]
    for value in refused:
        resp = await api.client.get("/v1/events", headers={"Authorization": value})
        body = await resp.json()
        assert_error(resp.status, body, 401)
        assert body["error"]["code"] == "unauthorized"
    before = await counts(database)
    resp = await api.client.post("/v1/events", json={"type": "sent", "messageKey": "m"}, headers={"Authorization": key})
    assert resp.status == 401
    assert await counts(database) == before
    # the scheme is case-insensitive (RFC 9110 11.1) and whitespace around the key is not part of it
    for value in (f"bearer {key}", f"BEARER {key}", f"Bearer   {key}   "):
        resp = await api.client.get("/v1/events", headers={"Authorization": value})
        assert resp.status == 200, value


@pytest.mark.parametrize(
    "raw_value",
    [
        b"Bearer " + b"k" * 100_000,  # over the server's header size limit
        pytest.param(
            b"Bearer \xff\xfe",
        ),
        pytest.param(
            b"Bearer dk_\xed\xa0\x80",
        ),
    ],
)
async def test_authorization_header_with_raw_bytes_is_4xx_not_500(api: Api, raw_value):
    status, _, _ = await raw_http(
        api.client,
        b"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " + raw_value + b"\r\nConnection: close\r\n\r\n",
    )
    assert 400 <= status < 500
    await assert_still_serving(api)


# --- path ids -----------------------------------------------------------------------------------

MALFORMED_IDS = ["999999999999999999999", "-1", "%00", "", "0x10", "1.5", "1e3", "%201", "1%20", "%EF%BC%91",
                 "1%0D%0A", "9" * 1000, "%2E%2E", "%2F..%2Fetc%2Fpasswd"]  # fmt: skip


@pytest.mark.parametrize(
    "template",
    [
        "/v1/callbacks/cb_{}",
        "/v1/callbacks/cb_{}/deliveries",
        "/v1/subscriptions/sub_{}",
        "/v1/deliveries/dlv_{}",
        "/v1/callbacks/{}",
    ],
)
async def test_malformed_or_huge_path_ids_are_404(api: Api, template):
    for raw in MALFORMED_IDS:
        status, body = await api.get(template.format(raw))
        assert_error(status, body, 404)
        status, body = await api.delete(template.format(raw))
        assert_error(status, body, 404, 405)
    await assert_still_serving(api)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/v1/callbacks/cb_%C2%B2"),
        pytest.param("/v1/subscriptions/sub_%C2%B2"),
        pytest.param("/v1/deliveries/dlv_%C2%B2"),
        "/v1/callbacks/cb_%D9%A1",  # ARABIC-INDIC DIGIT ONE
    ],
)
async def test_ids_with_non_ascii_digits_are_404(api: Api, path):
    status, body = await api.get(path)
    assert_error(status, body, 404)


# --- the last line of defence -------------------------------------------------------------------


async def test_a_lost_database_is_a_json_503_carrying_the_request_id(database_url, settings, aiohttp_client):
    from dispatcher import db
    from dispatcher.runtime import create_app

    pool = await db.create_pool(database_url, min_size=1, max_size=2)
    broken = db.Database(url=database_url, pool=pool, read_pool=pool)
    client = await aiohttp_client(create_app(settings, database=broken, role="api"))
    await pool.close()  # every query now raises asyncpg.InterfaceError, as when the server is gone
    resp = await client.get("/v1/events", headers={"Authorization": "Bearer dk_anything", "X-Request-Id": "req-1"})
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert resp.headers.get("X-Request-Id") == "req-1"
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["error"]["code"] == "unavailable" and "database" in body["error"]["message"]
