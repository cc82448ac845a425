"""The console's Subscriptions, Definitions and Sends views: every change a person can make there, the
API's own validation shown beside the form (with what was typed kept), previews rendered in the sandbox,
scopes, account isolation, and every displayed value escaped."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import markupsafe
import pytest

from dispatcher.sending import service
from tests.conftest import make_key
from tests.console import Console

XSS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "javascript:alert(1)"]
HOSTILE = " ".join(XSS)


@pytest.fixture
async def console(app_client: Any) -> AsyncIterator[Console]:
    c = Console(str(app_client.make_url("/")))
    yield c
    await c.close()


async def signed_in(console: Console, key: str, path: str) -> str:
    """Sign in and open `path` (its CSRF token is the one later posts send)."""
    await console.sign_in(key)
    status, page = await console.get(path)
    assert status == 200, page
    return page


def assert_escaped(page: str, *values: str) -> None:
    """Each hostile value appears only escaped: never as markup, never as a link."""
    for value in values:
        assert str(markupsafe.escape(value)) in page, value
    for raw in ("<script>alert(1)", "<img src=x", 'href="javascript:'):
        assert raw not in page


async def account_id(database: Any, name: str = "acme") -> int:
    return await database.pool.fetchval("SELECT id FROM accounts WHERE name = $1", name)


async def callback(api: Any, receiver: Any, name: str = "hooks") -> str:
    status, cb = await api.post("/v1/callbacks", {"name": name, "url": receiver.url})
    assert status == 201, cb
    return cb["callbackId"]


async def subscription(api: Any, cb: str, name: str = "orders", **extra: Any) -> dict[str, Any]:
    status, sub = await api.post("/v1/subscriptions", {"name": name, "callbackId": cb, "eventTypes": ["sent"], **extra})
    assert status == 201, sub
    return sub


DEFINITION = {
    "definitionKey": "welcome",
    "name": "Welcome",
    "content": {"from": "shop@example.com", "subject": "Hello {{ attributes.name }}", "html": "<p>Hi {{ attributes.name }}</p>",
                "text": "Hi {{ attributes.name }}"},
}  # fmt: skip


async def definition(api: Any, **changes: Any) -> dict[str, Any]:
    status, body = await api.post("/v1/definitions", {**DEFINITION, **changes})
    assert status == 201, body
    return body


async def store_message(database: Any, account: str, key: str, status: str, send_at: datetime | None = None) -> None:
    send = service.NewSend(key, "ann@example.com", {"recipient": {"to": "ann@example.com"}}, status,
                           send_at or datetime.now(UTC))  # fmt: skip
    async with database.pool.acquire() as conn:
        accepted, _ = await service.accept(conn, await account_id(database, account), None, [send])
    assert accepted == {key: status}


async def suppress(database: Any, address: str, reason: str = "bounced", account: str = "acme") -> None:
    await database.pool.execute(service.SQL["suppress"], await account_id(database, account), address, reason)


async def use_session_token(console: Console, database: Any) -> None:
    """The session's own CSRF token, for a key whose pages are all refused (a refused page carries none)."""
    console.csrf = await database.pool.fetchval(
        "SELECT csrf_token FROM console_sessions ORDER BY created_at DESC LIMIT 1"
    )


# --- subscriptions ------------------------------------------------------------------------------


BIG_BOUNCES = {"type": "bounced", "data.order.total": {"$gte": 100}}


async def test_a_subscription_is_created_from_the_form_with_an_operator_filter_and_listed(
    console: Console, api, receiver
):  # fmt: skip
    cb = await callback(api, receiver)
    page = await signed_in(console, api.key, "/console/subscriptions")
    assert f'<option value="{cb}">hooks</option>' in page
    assert '<textarea id="sub-filters" name="filters"' in page and "docs/filters.md" in page
    status, page = await console.post(
        "/console/subscriptions",
        [("name", "receipts"), ("callbackId", cb), ("eventTypes", "bounced"), ("eventTypes", "delivered"),
         ("filters", '{"type": "bounced",\r\n "data.order.total": {"$gte": 100}}')],
    )  # fmt: skip
    assert status == 200 and "The subscription was created." in page
    _, body = await api.get("/v1/subscriptions")
    [sub] = body["subscriptions"]
    assert (sub["name"], sub["callbackId"], sub["eventTypes"], sub["filters"], sub["status"]) == (
        "receipts", cb, ["bounced", "delivered"], BIG_BOUNCES, "active"
    )  # fmt: skip
    assert markupsafe.escape(json.dumps(BIG_BOUNCES)) in page  # the list shows the filter as JSON
    assert f'href="/console/subscriptions/{sub["subscriptionId"]}"' in page


async def test_an_empty_filter_field_or_an_empty_object_is_no_filter(console: Console, api, receiver):
    cb = await callback(api, receiver)
    await signed_in(console, api.key, "/console/subscriptions")
    for name, text in (("empty", "  "), ("braces", "{ }")):
        status, page = await console.post(
            "/console/subscriptions", {"name": name, "callbackId": cb, "eventTypes": "sent", "filters": text}
        )
        assert status == 200 and "The subscription was created." in page
    _, body = await api.get("/v1/subscriptions")
    assert [s["filters"] for s in body["subscriptions"]] == [{}, {}]


async def test_a_refused_subscription_form_names_the_field_and_keeps_what_was_typed(console: Console, api, receiver):
    cb = await callback(api, receiver)
    await signed_in(console, api.key, "/console/subscriptions")
    status, page = await console.post(
        "/console/subscriptions", {"name": "typed name", "callbackId": cb, "filters": '{"definitionKey": "dk"}'}
    )
    assert status == 400
    assert 'id="sub-types-error">eventTypes must have at least 1 item</p>' in page
    assert 'value="typed name"' in page and f'<option value="{cb}" selected>' in page
    assert str(markupsafe.escape('{"definitionKey": "dk"}')) + "</textarea>" in page
    status, page = await console.post(
        "/console/subscriptions", [("name", "x"), ("callbackId", cb), ("eventTypes", "sent"), ("eventTypes", "nope")]
    )
    assert status == 400 and "eventTypes[1]" in page
    assert 'value="sent" checked' in page
    _, body = await api.get("/v1/subscriptions")
    assert body["subscriptions"] == []


async def api_refusal(api: Any, cb: str, filters: Any) -> str:
    """What the API answers for this filter, as the form shows it: the field at fault, then the message."""
    status, body = await api.post("/v1/subscriptions", {"name": "api", "callbackId": cb, "eventTypes": ["sent"],
                                                         "filters": filters})  # fmt: skip
    assert status == 400, body
    return f"{body['error']['field']} {body['error']['message']}"


def shown_beside_the_filter(page: str, message: str) -> bool:
    return (
        f'<p class="error field-error" id="sub-filters-error">{markupsafe.escape(message)}</p>' in page
        and 'aria-describedby="sub-filters-help sub-filters-error" aria-invalid="true"' in page
    )


REFUSED_FILTERS = [
    {"k": {"$gtt": 1}},  # no such operator
    {"$or": [{"type": "sent"}, {"data.total": {"$gt": "tomorrow"}}]},  # a range needs a number or a time
    {"order.total": 5},  # a dotted path starts with data.
    ["sent"],  # not an object
    {"data.note": "nul \u0000 here"},  # PostgreSQL cannot store it
]


@pytest.mark.parametrize("filters", REFUSED_FILTERS, ids=lambda f: json.dumps(f))
async def test_a_refused_filter_shows_the_apis_message_beside_the_field_and_saves_nothing(
    console: Console, api, receiver, filters: Any
):  # fmt: skip
    cb = await callback(api, receiver)
    message = await api_refusal(api, cb, filters)
    sub = await subscription(api, cb, filters={"type": "sent"})
    path = f"/console/subscriptions/{sub['subscriptionId']}"
    await signed_in(console, api.key, "/console/subscriptions")
    text = json.dumps(filters)
    status, page = await console.post(
        "/console/subscriptions", {"name": "new", "callbackId": cb, "eventTypes": "sent", "filters": text}
    )
    assert status == 400 and shown_beside_the_filter(page, message), message
    assert f"{markupsafe.escape(text)}</textarea>" in page
    await console.get(path)
    status, page = await console.post(path, {"name": "renamed", "eventTypes": "bounced", "filters": text})
    assert status == 400 and shown_beside_the_filter(page, message), message
    assert f"{markupsafe.escape(text)}</textarea>" in page and 'value="renamed"' in page
    _, body = await api.get("/v1/subscriptions")
    assert [(s["name"], s["eventTypes"], s["filters"]) for s in body["subscriptions"]] == [
        ("orders", ["sent"], {"type": "sent"})
    ]


async def test_a_filter_that_is_not_json_is_refused_beside_the_field_and_saves_nothing(console: Console, api, receiver):
    cb = await callback(api, receiver)
    sub = await subscription(api, cb, filters=BIG_BOUNCES)
    path = f"/console/subscriptions/{sub['subscriptionId']}"
    await signed_in(console, api.key, "/console/subscriptions")
    bad = '{"type": "bounced",}'
    status, page = await console.post(
        "/console/subscriptions", {"name": "new", "callbackId": cb, "eventTypes": "sent", "filters": bad}
    )
    assert status == 400 and 'id="sub-filters-error">filters is not valid JSON: ' in page
    assert f"{markupsafe.escape(bad)}</textarea>" in page
    await console.get(path)
    status, page = await console.post(path, {"name": "orders", "eventTypes": "sent", "filters": bad})
    assert status == 400 and 'id="sub-filters-error">filters is not valid JSON: ' in page
    _, body = await api.get("/v1/subscriptions")
    assert [(s["name"], s["filters"]) for s in body["subscriptions"]] == [("orders", BIG_BOUNCES)]


async def test_a_second_subscription_with_the_same_name_is_a_conflict_beside_the_name(console: Console, api, receiver):
    cb = await callback(api, receiver)
    await subscription(api, cb, "orders")
    await signed_in(console, api.key, "/console/subscriptions")
    status, page = await console.post(
        "/console/subscriptions", {"name": "orders", "callbackId": cb, "eventTypes": "sent"}
    )
    assert status == 409 and "already exists" in page and 'id="sub-name-error"' in page


async def test_a_subscription_is_edited_paused_resumed_and_deleted(console: Console, api, receiver):
    cb = await callback(api, receiver)
    sub = await subscription(api, cb, filters={"recipient": "ann@example.com", "data.order.total": {"$gte": 100}})
    path = f"/console/subscriptions/{sub['subscriptionId']}"
    page = await signed_in(console, api.key, path)
    assert 'value="orders"' in page
    stored = json.dumps(sub["filters"], indent=2)  # the Filter field holds the whole filter, indented
    assert f">{markupsafe.escape(stored)}</textarea>" in page
    edited = {"$or": [{"recipient": "ann@example.com"}, {"data.order.total": {"$gte": 200, "$lt": 500}}]}
    status, page = await console.post(
        path,
        [
            ("name", "orders-2"),
            ("eventTypes", "bounced"),
            ("eventTypes", "complained"),
            ("filters", json.dumps(edited)),
        ],
    )
    assert status == 200 and "The subscription was saved." in page
    _, got = await api.get(f"/v1/subscriptions/{sub['subscriptionId']}")
    assert (got["name"], got["eventTypes"], got["filters"]) == ("orders-2", ["bounced", "complained"], edited)
    status, page = await console.post(path, {"name": "orders-2", "eventTypes": "bounced", "filters": ""})
    assert status == 200 and (await api.get(f"/v1/subscriptions/{sub['subscriptionId']}"))[1]["filters"] == {}
    _, page = await console.get(path)
    assert '<textarea id="sub-filters" name="filters" class="short" spellcheck="false"' in page
    assert 'aria-describedby="sub-filters-help"></textarea>' in page  # no filter: an empty field

    status, page = await console.post(path + "/pause")
    assert status == 200 and "The subscription is paused" in page
    assert (await api.get(f"/v1/subscriptions/{sub['subscriptionId']}"))[1]["status"] == "paused"
    assert f'action="{path}/resume"' in page and f'action="{path}/pause"' not in page
    status, page = await console.post(path + "/resume")
    assert (await api.get(f"/v1/subscriptions/{sub['subscriptionId']}"))[1]["status"] == "active"
    status, page = await console.post(path + "/delete")
    assert status == 200 and "The subscription was deleted." in page
    assert (await api.get(f"/v1/subscriptions/{sub['subscriptionId']}"))[0] == 404


async def test_an_edit_that_breaks_a_rule_is_refused_and_changes_nothing(console: Console, api, receiver):
    cb = await callback(api, receiver)
    sub = await subscription(api, cb)
    path = f"/console/subscriptions/{sub['subscriptionId']}"
    await signed_in(console, api.key, path)
    status, page = await console.post(path, {"name": "", "eventTypes": "sent"})
    assert status == 400 and 'id="sub-name-error"' in page
    assert (await api.get(f"/v1/subscriptions/{sub['subscriptionId']}"))[1]["name"] == "orders"


async def verified_callback(api: Any, receiver: Any) -> str:
    """A callback that receives events, with no subscription yet."""
    status, cb = await api.post("/v1/callbacks", {"name": "hooks", "url": receiver.url})
    assert status == 201, cb
    [request] = await receiver.wait_for(1, events_only=False)
    verify = {"verificationKey": request.json["verificationKey"]}
    status, body = await api.post(f"/v1/callbacks/{cb['callbackId']}/verify", verify)
    assert status == 200 and body["status"] == "active", body
    return cb["callbackId"]


async def record(api: Any, key: str, type_: str, total: float) -> None:
    data = {"order": {"total": total}, **({"bounceType": "hard"} if type_ == "bounced" else {})}
    status, body = await api.post("/v1/events", {"type": type_, "messageKey": key, "data": data})
    assert status == 201, body


async def delivered(api: Any, receiver: Any, cb: str, count: int) -> list[str]:
    """The events the receiver got once `count` have arrived, and those the callback has a delivery for:
    the same (fan-out happens as an event is recorded, so an event left out then never gets one)."""
    received = sorted(r.json["data"]["messageKey"] for r in await receiver.wait_for(count))
    status, page = await api.get(f"/v1/callbacks/{cb}/deliveries")
    assert status == 200 and sorted(d["messageKey"] for d in page["deliveries"]) == received, page
    return received


async def test_a_filter_set_in_the_console_delivers_only_the_events_it_matches(console: Console, api, receiver):
    cb = await verified_callback(api, receiver)
    await signed_in(console, api.key, "/console/subscriptions")
    status, page = await console.post(
        "/console/subscriptions",
        {"name": "big bounces", "callbackId": cb, "eventTypes": "*", "filters": json.dumps(BIG_BOUNCES)},
    )
    assert status == 200 and "The subscription was created." in page
    await record(api, "small-bounce", "bounced", 99.5)
    await record(api, "big-delivery", "delivered", 150)
    await record(api, "big-bounce", "bounced", 150)
    await record(api, "marker-1", "bounced", 100)  # matches, recorded last: what came before was handled
    assert await delivered(api, receiver, cb, 2) == ["big-bounce", "marker-1"]

    [sub] = (await api.get("/v1/subscriptions"))[1]["subscriptions"]
    path = f"/console/subscriptions/{sub['subscriptionId']}"
    await console.get(path)
    status, page = await console.post(
        path, {"name": "small ones", "eventTypes": "*", "filters": '{"data.order.total": {"$lt": 100}}'}
    )
    assert status == 200 and "The subscription was saved." in page
    await record(api, "big-bounce-2", "bounced", 150)
    await record(api, "small-delivery", "delivered", 20)
    await record(api, "marker-2", "opened", 1)
    assert await delivered(api, receiver, cb, 4) == ["big-bounce", "marker-1", "marker-2", "small-delivery"]


# --- definitions --------------------------------------------------------------------------------


def definition_form(**changes: str) -> dict[str, str]:
    form = {
        "definitionKey": "welcome", "name": "Welcome", "status": "active", "description": "",
        "content.from": "shop@example.com", "content.subject": "Hello {{ attributes.name }}",
        "content.html": "<p>Hi {{ attributes.name }}</p>", "content.text": "Hi\r\n{{ attributes.name }}",
        "options.tracked": "on",
    }  # fmt: skip
    form.update(changes)
    return form


async def test_a_definition_is_created_from_the_form(console: Console, api):
    await signed_in(console, api.key, "/console/definitions")
    status, page = await console.post("/console/definitions", definition_form())
    assert status == 200 and "The definition was created." in page
    assert console.last.url.path == "/console/definitions/welcome"
    _, got = await api.get("/v1/definitions/welcome")
    assert got["content"] == {"from": "shop@example.com", "subject": "Hello {{ attributes.name }}",
                              "html": "<p>Hi {{ attributes.name }}</p>", "text": "Hi\n{{ attributes.name }}"}  # fmt: skip
    assert got["options"] == {"tracked": True, "disableMessageRetention": False, "sendToUnsubscribed": False}
    status, page = await console.get("/console/definitions")
    assert 'href="/console/definitions/welcome"' in page and "Hello {{ attributes.name }}" in page


async def test_bad_liquid_is_refused_naming_the_field_with_every_value_kept(console: Console, api):
    await signed_in(console, api.key, "/console/definitions")
    form = definition_form(**{"content.html": "<p>{% if attributes.x %}open</p>", "name": "Kept name"})
    status, page = await console.post("/console/definitions", form)
    assert status == 400
    assert re.search(r'id="def-html-error">content\.html invalid Liquid template: [^<]+', page), page
    assert "Kept name" in page and html.escape("<p>{% if attributes.x %}open</p>") in page
    assert (await api.get("/v1/definitions/welcome"))[0] == 404


async def test_a_definition_key_the_api_refuses_is_refused_here_too(console: Console, api):
    await signed_in(console, api.key, "/console/definitions")
    status, page = await console.post("/console/definitions", definition_form(definitionKey="has space"))
    assert status == 400 and 'id="def-key-error">definitionKey' in page and 'value="has space"' in page


async def test_a_definition_is_edited_and_a_broken_edit_changes_nothing(console: Console, api):
    await definition(api)
    path = "/console/definitions/welcome"
    page = await signed_in(console, api.key, path)
    assert "Hello {{ attributes.name }}" in page
    status, page = await console.post(
        path, definition_form(name="Welcome 2", **{"content.subject": "Hey", "content.text": ""})
    )
    assert status == 200 and "The definition was saved." in page
    _, got = await api.get("/v1/definitions/welcome")
    assert got["name"] == "Welcome 2" and got["content"]["subject"] == "Hey" and "text" not in got["content"]
    status, page = await console.post(path, definition_form(**{"content.subject": "{{ attributes.name | nope }}"}))
    assert status == 400 and "content.subject invalid Liquid template: unknown filter" in page
    assert html.escape("{{ attributes.name | nope }}", quote=True) in page
    assert (await api.get("/v1/definitions/welcome"))[1]["content"]["subject"] == "Hey"


async def test_a_preview_renders_the_form_with_sample_attributes_and_stores_nothing(console: Console, api):
    await definition(api)
    path = "/console/definitions/welcome"
    await signed_in(console, api.key, path)
    form = definition_form(**{"content.subject": "Order for {{ attributes.name }} to {{ recipient.to }}",
                              "attributes": '{"name": "Ada & <b>Co</b>"}', "previewTo": "ada@example.com"})  # fmt: skip
    status, page = await console.post(path + "/preview", form)
    assert status == 200, page
    assert '<dd data-preview="subject">Order for Ada &amp; &lt;b&gt;Co&lt;/b&gt; to ada@example.com</dd>' in page
    # The HTML body escapes what it outputs (the sender's HTML environment), then the page escapes it again.
    assert (
        '<pre data-preview="html">&lt;p&gt;Hi Ada &amp;amp; &amp;lt;b&amp;gt;Co&amp;lt;/b&amp;gt;&lt;/p&gt;</pre>'
        in page
    )
    assert 'srcdoc="&lt;p&gt;Hi Ada &amp;amp; &amp;lt;b&amp;gt;Co&amp;lt;/b&amp;gt;&lt;/p&gt;"' in page
    assert '<pre data-preview="text">Hi\nAda &amp; &lt;b&gt;Co&lt;/b&gt;</pre>' in page
    assert (await api.get("/v1/definitions/welcome"))[1]["content"]["subject"] == "Hello {{ attributes.name }}"


@pytest.mark.parametrize(
    ("attributes", "message"),
    [("{nope", "not valid JSON"), ("[1, 2]", "must be a JSON object")],
)
async def test_preview_attributes_must_be_a_json_object(console: Console, api, attributes: str, message: str):
    await definition(api)
    await signed_in(console, api.key, "/console/definitions/welcome")
    status, page = await console.post("/console/definitions/welcome/preview", definition_form(attributes=attributes))
    assert status == 400 and message in page and 'id="def-attributes-error"' in page
    assert html.escape(attributes) in page


async def test_a_template_that_fails_while_rendering_shows_why(console: Console, api):
    await definition(api)
    await signed_in(console, api.key, "/console/definitions/welcome")
    loops = "{% for i in (1..1000) %}{% for j in (1..1000) %}x{% endfor %}{% endfor %}"  # over the loop limit
    form = definition_form(**{"content.text": loops})
    status, page = await console.post("/console/definitions/welcome/preview", form)
    assert status == 400 and re.search(r"The preview failed: [^<]*loop", page), page


async def test_a_definition_is_deactivated_and_activated(console: Console, api):
    await definition(api)
    path = "/console/definitions/welcome"
    await signed_in(console, api.key, path)
    status, page = await console.post(path + "/deactivate")
    assert status == 200 and "The definition is inactive" in page
    assert (await api.get("/v1/definitions/welcome"))[1]["status"] == "inactive"
    status, page = await console.post(path + "/activate")
    assert status == 200 and "The definition is active" in page
    assert (await api.get("/v1/definitions/welcome"))[1]["status"] == "active"


# --- sends --------------------------------------------------------------------------------------


async def test_a_draft_is_sent_and_another_discarded(console: Console, api, database):
    await store_message(database, "acme", "d-1", "draft")
    await store_message(database, "acme", "d-2", "draft")
    page = await signed_in(console, api.key, "/console/sends")
    assert 'href="/console/messages/d-1"' in page and 'href="/console/messages/d-2"' in page
    status, page = await console.post("/console/sends/send-draft", {"messageKey": "d-1"})
    assert status == 200 and "The draft was queued for sending." in page
    status, page = await console.post("/console/sends/discard-draft", {"messageKey": "d-2"})
    assert status == 200 and "The draft was discarded." in page
    acme = await account_id(database)
    async with database.pool.acquire() as conn:
        assert (await service.get_message(conn, acme, "d-1"))["status"] in ("queued", "sent", "failed")
        assert await service.get_message(conn, acme, "d-2") is None
    assert 'href="/console/messages/d-1"' not in page
    status, page = await console.post("/console/sends/send-draft", {"messageKey": "d-1"})
    assert status == 409 and "not a draft" in page


async def test_scheduled_sends_are_listed_with_their_time_and_offer_no_discard(console: Console, api, database):
    when = datetime.now(UTC) + timedelta(days=2)
    await store_message(database, "acme", "later", "scheduled", when)
    page = await signed_in(console, api.key, "/console/sends")
    section = page.split('id="scheduled"', 1)[1].split('id="suppressions"', 1)[0]
    assert 'href="/console/messages/later"' in section and when.strftime("%Y-%m-%d %H:%M:%S") in section
    assert "<button" not in section


async def test_suppressions_are_searched_by_address_and_removed(console: Console, api, database):
    await suppress(database, "ann@example.com", "bounced")
    await suppress(database, "bob@example.com", "unsubscribed")
    page = await signed_in(console, api.key, "/console/sends")
    assert "ann@example.com" in page and "bob@example.com" in page
    status, page = await console.get("/console/sends?address=BOB")
    assert "bob@example.com" in page and "ann@example.com" not in page
    status, page = await console.post("/console/sends/unsuppress", {"address": "bob@example.com"})
    assert status == 200 and "taken off the suppression list" in page
    assert (await api.get("/v1/suppressions/bob@example.com"))[0] == 404
    assert (await api.get("/v1/suppressions/ann@example.com"))[0] == 200


# --- scopes and isolation -----------------------------------------------------------------------

PAGES = ["/console/subscriptions", "/console/definitions", "/console/sends"]


async def test_a_read_only_key_is_offered_none_of_these_views_and_is_refused_them(
    console: Console, api, database, receiver
):
    cb = await callback(api, receiver)
    sub = await subscription(api, cb)
    await definition(api)
    await store_message(database, "acme", "d-1", "draft")
    await suppress(database, "ann@example.com")
    reader = await make_key(database, "acme", ["events:read"])
    await console.sign_in(reader)
    for path in PAGES + [f"/console/subscriptions/{sub['subscriptionId']}", "/console/definitions/welcome"]:
        status, page = await console.get(path)
        assert status == 403 and "lacks the" in page, path
        assert all(f'href="{p}"' not in page for p in PAGES)
    await use_session_token(console, database)
    posts = [
        ("/console/subscriptions", {"name": "x", "callbackId": cb, "eventTypes": "sent"}),
        (f"/console/subscriptions/{sub['subscriptionId']}/delete", {}),
        (f"/console/subscriptions/{sub['subscriptionId']}/pause", {}),
        ("/console/definitions", definition_form(definitionKey="other")),
        ("/console/definitions/welcome", definition_form(name="changed")),
        ("/console/definitions/welcome/deactivate", {}),
        ("/console/definitions/welcome/preview", definition_form()),
        ("/console/sends/send-draft", {"messageKey": "d-1"}),
        ("/console/sends/discard-draft", {"messageKey": "d-1"}),
        ("/console/sends/unsuppress", {"address": "ann@example.com"}),
    ]
    for path, form in posts:
        status, page = await console.post(path, form)
        assert status == 403 and "lacks the" in page, path
    _, subs = await api.get("/v1/subscriptions")
    assert [(s["name"], s["status"]) for s in subs["subscriptions"]] == [("orders", "active")]
    _, got = await api.get("/v1/definitions/welcome")
    assert (got["name"], got["status"]) == ("Welcome", "active")
    assert (await api.get("/v1/messages/d-1"))[1]["status"] == "draft"
    assert (await api.get("/v1/suppressions/ann@example.com"))[0] == 200


async def test_a_callbacks_key_sees_subscriptions_but_not_sends(console: Console, database):
    manager = await make_key(database, "acme", ["callbacks:manage"])
    await console.sign_in(manager)
    status, page = await console.get("/console/subscriptions")
    assert status == 200 and 'href="/console/definitions"' not in page and 'href="/console/sends"' not in page
    assert (await console.get("/console/definitions"))[0] == 403


async def test_another_accounts_subscriptions_definitions_and_messages_are_not_found(
    console: Console, api, other_api, database, receiver
):
    cb = await callback(other_api, receiver)
    theirs = await subscription(other_api, cb)
    await definition(other_api)
    await store_message(database, "globex", "g-1", "draft")
    await suppress(database, "gina@example.com", account="globex")
    page = await signed_in(console, api.key, "/console/sends")
    assert "g-1" not in page and "gina@example.com" not in page
    sub_path = f"/console/subscriptions/{theirs['subscriptionId']}"
    assert (await console.get(sub_path))[0] == 404
    assert (await console.get("/console/definitions/welcome"))[0] == 404
    status, page = await console.get("/console/subscriptions")
    assert theirs["subscriptionId"] not in page and cb not in page
    for path, form in [
        (sub_path, {"name": "mine", "eventTypes": "sent"}),
        (sub_path + "/pause", {}),
        (sub_path + "/delete", {}),
        ("/console/subscriptions", {"name": "mine", "callbackId": cb, "eventTypes": "sent"}),
        ("/console/definitions/welcome", definition_form()),
        ("/console/definitions/welcome/preview", definition_form()),
        ("/console/definitions/welcome/deactivate", {}),
        ("/console/sends/send-draft", {"messageKey": "g-1"}),
        ("/console/sends/discard-draft", {"messageKey": "g-1"}),
        ("/console/sends/unsuppress", {"address": "gina@example.com"}),
    ]:
        status, _ = await console.post(path, form)
        assert status == 404, path
    _, got = await other_api.get(f"/v1/subscriptions/{theirs['subscriptionId']}")
    assert (got["name"], got["status"]) == ("orders", "active")
    assert (await other_api.get("/v1/definitions/welcome"))[1]["status"] == "active"
    assert (await other_api.get("/v1/messages/g-1"))[1]["status"] == "draft"
    assert (await other_api.get("/v1/suppressions/gina@example.com"))[0] == 200
    assert (await api.get("/v1/subscriptions"))[1]["subscriptions"] == []


# --- escaping -----------------------------------------------------------------------------------


async def test_hostile_subscription_names_and_filters_are_escaped(console: Console, api, receiver):
    cb = await callback(api, receiver, name=XSS[0])
    sub = await subscription(api, cb, name=HOSTILE[:100], filters={"definitionKey": XSS[1], "recipient": XSS[2]})
    page = await signed_in(console, api.key, "/console/subscriptions")
    assert_escaped(page, XSS[0], XSS[1], XSS[2])
    status, page = await console.get(f"/console/subscriptions/{sub['subscriptionId']}")
    assert_escaped(page, XSS[0], XSS[1], XSS[2])
    status, page = await console.post("/console/subscriptions", {"name": HOSTILE, "callbackId": cb})
    assert status == 400
    assert_escaped(page, HOSTILE)


async def test_hostile_definition_names_subjects_templates_and_previews_are_escaped(console: Console, api):
    template = "<p>{{ attributes.x }}</p>" + XSS[0] + '<a href="javascript:alert(1)">x</a>'
    await definition(api, name=HOSTILE, content={"from": "shop@example.com", "subject": HOSTILE, "html": template,
                                                  "text": XSS[1]})  # fmt: skip
    page = await signed_in(console, api.key, "/console/definitions")
    assert_escaped(page, HOSTILE)
    page = (await console.get("/console/definitions/welcome"))[1]
    assert_escaped(page, HOSTILE, template, XSS[1])
    form = definition_form(name=HOSTILE, attributes='{"x": "' + XSS[1].replace('"', '\\"') + '"}',
                           **{"content.subject": HOSTILE, "content.html": template, "content.text": XSS[1]})  # fmt: skip
    status, page = await console.post("/console/definitions/welcome/preview", form)
    assert status == 200
    assert_escaped(page, HOSTILE, template)
    status, page = await console.post("/console/definitions", definition_form(definitionKey=XSS[0], name=XSS[1]))
    assert status == 400
    assert_escaped(page, XSS[0], XSS[1])


async def test_hostile_message_keys_and_suppressed_addresses_are_escaped(console: Console, api, database):
    for i, value in enumerate(XSS):
        status, later = ("draft", None) if i % 2 == 0 else ("scheduled", datetime.now(UTC) + timedelta(days=1))
        await store_message(database, "acme", value, status, later)
        await suppress(database, value.lower(), reason=value)
    page = await signed_in(console, api.key, "/console/sends")
    assert_escaped(page, *XSS)
    assert f'href="/console/messages/{quote(XSS[0], safe="")}"' in page
    assert 'href="/console/messages/javascript%3Aalert%281%29"' in page
    status, page = await console.post("/console/sends/discard-draft", {"messageKey": XSS[0]})
    assert status == 200
    async with database.pool.acquire() as conn:
        assert await service.get_message(conn, await account_id(database), XSS[0]) is None
