"""The console's Messages view: find a message by messageKey, recipient, type, definition and time; read its
timeline with its derived status, its rendered content where retained and the deliveries each event caused;
open a delivery's attempts and retry it. Only the signed-in account's history is reachable, a key needs
events:read to read it (callbacks:manage to retry), and every displayed field is escaped."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from markupsafe import escape

from dispatcher import sessions
from dispatcher.runtime import create_app
from tests.conftest import Api, make_key, setup_callback, wait_until
from tests.console import Console
from tests.integration.test_smtp_transport import free_port

HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "javascript:alert(1)"]


async def record(api: Api, *events: dict[str, Any]) -> list[dict[str, Any]]:
    status, body = await api.post("/v1/events", {"events": list(events)})
    assert status == 201, body
    return body["events"]


def event(key: str, type_: str = "sent", **fields: Any) -> dict[str, Any]:
    return {"messageKey": key, "type": type_, **fields}


def result_keys(page: str) -> list[str]:
    """The messageKeys of a results table, in order (from their timeline links)."""
    table = page.split('<table class="wide messages">', 1)[1].split("</table>", 1)[0]
    return [html.unescape(k) for k in re.findall(r'<a href="/console/messages/[^"]*">([^<]*)</a>', table)]


def older_link(page: str) -> str | None:
    found = re.search(r'<a href="([^"]*)" rel="next">Older', page)
    return html.unescape(found[1]) if found else None


async def search(console: Console, **query: str) -> tuple[int, str]:
    return await console.get("/console/messages?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items()))


# --- search ----------------------------------------------------------------------------------------


@pytest.fixture
async def recorded(api: Api) -> None:
    await record(
        api,
        event("m-ann", "sent", recipient="Ann@example.com", definitionKey="receipt"),
        event(
            "m-bob",
            "bounced",
            recipient="bob@example.com",
            definitionKey="receipt",
            data={"bounceType": "hard", "reason": "no such user"},
        ),
        event("m-cy", "delivered", recipient="cy@example.com", definitionKey="welcome"),
        event("m-ann", "opened", recipient="Ann@example.com", definitionKey="receipt"),
    )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ["m-ann", "m-cy", "m-bob", "m-ann"]),
        ({"recipient": "ann@EXAMPLE.com"}, ["m-ann", "m-ann"]),
        ({"type": "bounced"}, ["m-bob"]),
        ({"definition": "welcome"}, ["m-cy"]),
        ({"definition": "receipt", "type": "sent"}, ["m-ann"]),
        ({"key": "m-ann", "type": "opened"}, ["m-ann"]),
        ({"recipient": "nobody@example.com"}, []),
    ],
    ids=["latest", "recipient", "type", "definition", "definition and type", "key and type", "no match"],
)
async def test_a_search_by_each_filter_lists_the_matching_events_newest_first(
    console: Console, recorded: None, query: dict[str, str], expected: list[str]
):
    status, page = await search(console, **query)
    assert status == 200
    assert result_keys(page) == expected
    for value in query.values():  # the form keeps the search, so it can be refined
        assert f'value="{value}"' in page or f'value="{value}" selected' in page


async def test_an_exact_message_key_alone_opens_its_timeline(console: Console, recorded: None):
    status, _ = await search(console, key="m-bob")
    assert status == 200 and console.last.url.path == "/console/messages/m-bob"
    status, page = await search(console, key="m-nobody")
    assert status == 200 and console.last.url.path == "/console/messages"
    assert result_keys(page) == [] and "No events match" in page


async def test_a_time_range_compares_with_when_events_occurred_in_utc(console: Console, api: Api):
    now = datetime.now(UTC).replace(microsecond=0)
    await record(
        api,
        *(
            event(f"m-{days}d", occurredAt=(now - timedelta(days=days)).isoformat()) for days in (5, 3, 1)
        ),  # recorded in the order they occurred
    )
    since = (now - timedelta(days=4)).strftime("%Y-%m-%dT%H:%M:%S")  # datetime-local: no offset, read as UTC
    until = (now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    status, page = await search(console, **{"from": since, "to": until})
    assert status == 200 and result_keys(page) == ["m-3d"]
    status, page = await search(console, **{"from": since})
    assert result_keys(page) == ["m-1d", "m-3d"]
    status, page = await search(console, **{"to": until})
    assert result_keys(page) == ["m-3d", "m-5d"]


async def test_a_recipient_search_without_from_looks_back_a_week(console: Console, api: Api):
    old = (datetime.now(UTC) - timedelta(days=9)).isoformat()
    await record(
        api, event("m-old", recipient="ann@example.com", occurredAt=old), event("m-new", recipient="ann@example.com")
    )
    status, page = await search(console, recipient="ann@example.com")
    assert result_keys(page) == ["m-new"] and "a recipient search without From" in page
    since = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M")
    status, page = await search(console, recipient="ann@example.com", **{"from": since})
    assert result_keys(page) == ["m-new", "m-old"]


@pytest.mark.parametrize(
    ("query", "message"),
    [({"from": "yesterday"}, "From is not a date and time"), ({"type": "exploded"}, "choose an event type")],
)
async def test_a_malformed_search_says_what_is_wrong_on_the_form(console: Console, query: dict[str, str], message: str):
    status, page = await search(console, **query)
    assert status == 400 and message in page and '<form method="get"' in page


async def test_results_page_backwards_with_an_older_link_keeping_the_filters(console: Console, api: Api):
    await record(api, *(event(f"p-{i:02}", "clicked", data={"url": "https://example.com/"}) for i in range(60)))
    await record(api, event("other", "sent"))
    status, page = await search(console, type="clicked")
    first = result_keys(page)
    assert first == [f"p-{i:02}" for i in range(59, 9, -1)]
    link = older_link(page)
    assert link is not None and "type=clicked" in link and "cursor=" in link
    status, page = await console.get(link)
    assert status == 200 and result_keys(page) == [f"p-{i:02}" for i in range(9, -1, -1)]
    assert older_link(page) is None and "← Newest" in page


# --- a message's timeline ----------------------------------------------------------------------------


async def test_the_timeline_lists_events_in_the_order_they_occurred_with_the_derived_status(console: Console, api: Api):
    t = datetime.now(UTC) - timedelta(hours=1)
    await record(
        api,
        event("order/1?x", "opened", occurredAt=(t + timedelta(minutes=3)).isoformat()),
        event("order/1?x", "queued", occurredAt=t.isoformat()),
        event("order/1?x", "delivered", occurredAt=(t + timedelta(minutes=2)).isoformat(), data={"mx": "mx.example"}),
        event("order/1?x", "sent", occurredAt=(t + timedelta(minutes=1)).isoformat()),
    )
    status, page = await search(console)
    assert "/console/messages/order%2F1%3Fx" in page  # a key's every character survives the link
    status, page = await console.get("/console/messages/order%2F1%3Fx")
    assert status == 200
    timeline = page.split('<ol class="timeline">', 1)[1]
    types = re.findall(r'<h3><span class="status status-([a-z-]+)">', timeline)
    assert types == ["queued", "sent", "delivered", "opened"]
    assert '<dt>Status</dt><dd><span class="status status-delivered">' in page
    assert "&#34;mx&#34;: &#34;mx.example&#34;" in page  # the event's data, pretty and escaped
    assert "No deliveries: no active subscription matched" in page
    assert '<dd class="outcomes">none sent</dd>' in page


async def test_an_unknown_message_is_a_404(console: Console):
    status, page = await console.get("/console/messages/nothing-here")
    assert status == 404 and "no such message" in page


async def test_each_event_shows_the_deliveries_it_caused_and_their_outcome(console: Console, api: Api, receiver):
    receiver.mode, receiver.fail_text = "fail", "endpoint is down for maintenance"
    cb_id, _ = await setup_callback(api, receiver, name="orders-hook", event_types=["sent"])
    await record(api, event("m-1", "queued"), event("m-1", "sent", recipient="ann@example.com"))

    async def finished() -> bool:
        _, body = await api.get(f"/v1/callbacks/{cb_id}/deliveries")
        return [d["status"] for d in body["deliveries"]] == ["failed"]

    await wait_until(finished)
    status, page = await console.get("/console/messages/m-1")
    queued, sent = page.split('<li class="card event"')[1:]
    assert "No deliveries" in queued
    assert f'<a href="/console/callbacks/{cb_id}">orders-hook</a>' in sent
    assert '<span class="status status-failed">failed</span>' in sent
    assert "HTTP 500" in sent and '<td data-label="Attempts">4</td>' in sent  # the test schedule: 3 retries
    assert '<dd class="outcomes">1 <span class="status status-failed">failed</span></dd>' in page
    assert "data-live-refresh" not in page  # nothing is left to wait for
    delivery = re.search(r'href="/console/deliveries/(dlv_\d+)"', sent)
    assert delivery

    status, page = await console.get(f"/console/deliveries/{delivery[1]}")
    assert status == 200
    attempts = page.split('<li class="card attempt">')[1:]
    assert len(attempts) == 4 and all("HTTP 500" in a for a in attempts)
    assert "endpoint is down for maintenance" in attempts[0]
    assert f'<th scope="row">webhook-id</th><td><code>{delivery[1]}</code>' in attempts[0]
    assert '<th scope="row">webhook-signature</th><td><code>(not stored)</code>' in attempts[0]
    assert "&#34;messageKey&#34;: &#34;m-1&#34;" in attempts[0]  # the body sent, rebuilt from the event
    assert "&#34;recipient&#34;: &#34;ann@example.com&#34;" in attempts[0]
    received = receiver.events[0].json
    assert received["data"]["messageKey"] == "m-1" and received["type"] == "sent"

    receiver.mode = "ok"
    status, page = await console.post(f"/console/deliveries/{delivery[1]}/retry")
    assert status == 200 and console.last.url.path == f"/console/deliveries/{delivery[1]}"
    assert "The delivery is queued to be sent again now." in page
    await wait_until(lambda: _succeeded(api, cb_id))
    status, page = await console.get(f"/console/deliveries/{delivery[1]}")
    assert '<dt>Status</dt><dd><span class="status status-succeeded">' in page
    assert page.count('<li class="card attempt">') == 5


async def test_a_pending_delivery_is_refetched_live_as_its_events_rows_alone(
    console: Console, api: Api, other_api: Api, receiver
):
    receiver.mode, receiver.retry_after = "rate", "60"  # answered 429: due again in a minute
    cb_id, _ = await setup_callback(api, receiver, name="slow-hook")
    [sent] = await record(api, event("m-1", "sent"))
    await receiver.wait_for(1)

    async def attempted() -> bool:
        _, body = await api.get(f"/v1/callbacks/{cb_id}/deliveries")
        return body["deliveries"][0]["attemptCount"] == 1

    await wait_until(attempted)
    status, page = await console.get("/console/messages/m-1")
    fragment = f"/console/messages/m-1/deliveries/{sent['eventId']}"
    assert f'<tbody data-live-refresh="{fragment}" data-live-on="outcomes" data-live-callback="{cb_id}">' in page
    status, rows = await console.get(fragment)
    assert status == 200 and rows.lstrip().startswith("<tr>") and "<html" not in rows
    assert '<span class="status status-pending">pending</span>' in rows and "HTTP 429" in rows
    status, _ = await console.get(f"/console/messages/m-2/deliveries/{sent['eventId']}")
    assert status == 404  # the event is not that message's
    [theirs] = await record(other_api, event("m-1", "sent"))
    status, _ = await console.get(f"/console/messages/m-1/deliveries/{theirs['eventId']}")
    assert status == 404


@pytest.mark.parametrize(("fmt", "signature"), [("ens", "x-sfmc-ens-signature"), ("customerio", "x-cio-signature")])
async def test_a_delivery_shows_the_request_in_its_callbacks_format(
    console: Console, api: Api, receiver, fmt, signature
):
    cb_id, _ = await setup_callback(api, receiver, batch=5)
    status, body = await api.patch(f"/v1/callbacks/{cb_id}", {"format": fmt})
    assert status == 200, body
    await record(api, event("m-1", "sent", recipient="ann@example.com"))
    [request] = await receiver.wait_for(1)
    await wait_until(lambda: _succeeded(api, cb_id))
    _, body = await api.get(f"/v1/callbacks/{cb_id}/deliveries")
    status, page = await console.get(f"/console/deliveries/{body['deliveries'][0]['deliveryId']}")
    assert status == 200
    assert f'<th scope="row">{signature}</th><td><code>(not stored)</code>' in page
    shown = html.unescape(page.split('<pre class="request-body">', 1)[1].split("</pre>", 1)[0])
    assert json.loads(shown) == request.json  # the body as the receiver got it (a batch of one)


async def _succeeded(api: Api, cb_id: str) -> bool:
    _, body = await api.get(f"/v1/callbacks/{cb_id}/deliveries")
    return [d["status"] for d in body["deliveries"]] == ["succeeded"]


# --- rendered content ------------------------------------------------------------------------------


@pytest.fixture
async def send_console(database, settings, aiohttp_client, smtp) -> AsyncIterator[tuple[Api, Console]]:
    http_port = free_port()
    s = settings.model_copy(update={"mail_url": f"smtp://127.0.0.1:{smtp[1]}?timeout=5",
                                    "public_url": f"http://127.0.0.1:{http_port}"})  # fmt: skip
    client = await aiohttp_client(create_app(s, database=database), server_kwargs={"port": http_port})
    api = Api(client, await make_key(database, "acme"))
    c = Console(str(client.make_url("/")))
    await c.sign_in(api.key)
    yield api, c
    await c.close()


async def test_a_sent_message_shows_its_send_and_rendered_content_escaped(send_console, database):
    api, console = send_console
    status, body = await api.post("/v1/messages/order-7", {
        "from": "Shop <shop@example.com>", "subject": "Your order <b>7</b>",
        "html": "<p>Hi <script>alert(1)</script></p>", "text": "Hi there, order 7",
        "recipient": {"to": "ann@example.com"},
    })  # fmt: skip
    assert status == 202, body

    async def sent() -> bool:
        _, page = await console.get("/console/messages/order-7")
        return '<span class="status status-sent">sent</span>' in page

    await wait_until(sent)
    status, page = await console.get("/console/messages/order-7")
    send = page.split('id="send-title"', 1)[1].split("</section>", 1)[0]
    assert "ann@example.com" in send and '<dt>Send status</dt><dd><span class="status status-sent">' in send
    assert "Your order &lt;b&gt;7&lt;/b&gt;" in send
    assert "Hi there, order 7" in send
    assert "&lt;p&gt;Hi &lt;script&gt;alert(1)&lt;/script&gt;&lt;/p&gt;" in send  # the HTML part as escaped source
    assert "<script>alert(1)" not in page

    await database.pool.execute("UPDATE messages SET rendered = NULL WHERE message_key = 'order-7'")  # as a purge does
    status, page = await console.get("/console/messages/order-7")
    assert "Content not retained" in page and "Hi there, order 7" not in page


# --- isolation and scopes ---------------------------------------------------------------------------


async def test_another_accounts_messages_and_deliveries_are_not_found(
    console: Console, api: Api, other_api: Api, receiver
):
    await record(other_api, event("theirs", "sent", recipient="eve@example.com"))
    await record(api, event("ours", "sent"))
    status, page = await console.get("/console/messages/theirs")
    assert status == 404
    status, page = await search(console, key="theirs")
    assert result_keys(page) == []
    status, page = await search(console, recipient="eve@example.com")
    assert result_keys(page) == []
    status, page = await search(console)
    assert result_keys(page) == ["ours"]

    cb_id, _ = await setup_callback(other_api, receiver, name="their-hook")
    await record(other_api, event("theirs-2", "sent"))
    await receiver.wait_for(1)
    _, body = await other_api.get(f"/v1/callbacks/{cb_id}/deliveries")
    their_delivery = body["deliveries"][0]["deliveryId"]
    status, _ = await console.get(f"/console/deliveries/{their_delivery}")
    assert status == 404
    status, _ = await console.post(f"/console/deliveries/{their_delivery}/retry")
    assert status == 404
    for bad in ("dlv_x", "cb_1", "dlv_99999999999999999999"):
        status, _ = await console.get(f"/console/deliveries/{bad}")
        assert status == 404


async def test_a_portal_link_reaches_only_its_callbacks_deliveries(app_client, api: Api, database, receiver):
    mine, _ = await setup_callback(api, receiver, name="a")
    other, _ = await setup_callback(api, receiver, name="b")
    await record(api, event("m-1", "sent"))
    await receiver.wait_for(2)
    _, body = await api.get(f"/v1/callbacks/{mine}/deliveries")
    reached = body["deliveries"][0]["deliveryId"]
    _, body = await api.get(f"/v1/callbacks/{other}/deliveries")
    unreached = body["deliveries"][0]["deliveryId"]
    account_id = await database.pool.fetchval("SELECT id FROM accounts WHERE name = 'acme'")
    token, _ = await sessions.start(
        database.pool, account_id=account_id, kind="portal", scopes=sessions.PORTAL_SCOPES,
        lifetime=timedelta(hours=1), callback_ids=[int(mine.removeprefix("cb_"))],
    )  # fmt: skip
    portal = Console(str(app_client.make_url("/")), cookies=False)
    try:
        status, page = await portal.get(f"/portal/{token}/deliveries/{reached}")
        assert status == 200 and "Retry now" in page
        assert f'action="/portal/{token}/deliveries/{reached}/retry"' in page
        assert "/console/" not in page.split("<main", 1)[1]  # every link stays in the portal
        status, _ = await portal.get(f"/portal/{token}/deliveries/{unreached}")
        assert status == 404
        status, _ = await portal.post(f"/portal/{token}/deliveries/{unreached}/retry")
        assert status == 404
        status, _ = await portal.get(f"/portal/{token}/messages")
        assert status == 404  # messages are the account's, not a portal's
    finally:
        await portal.close()


async def test_a_key_without_events_read_is_refused_and_not_offered_messages(app_client, database, api: Api):
    c = Console(str(app_client.make_url("/")))
    try:
        await c.sign_in(await make_key(database, "acme", ["callbacks:manage"]))
        status, page = await c.get("/console/messages")
        assert status == 403 and "events:read" in page
        status, _ = await c.get("/console/messages/m-1")
        assert status == 403
        status, page = await c.get("/console/keys")  # any page shows the nav: no Messages entry
        assert 'href="/console/messages"' not in page
    finally:
        await c.close()


async def test_a_read_only_key_sees_no_retry_button_and_cannot_retry(app_client, database, api: Api, receiver):
    cb_id, _ = await setup_callback(api, receiver)
    await record(api, event("m-1", "sent"))
    await receiver.wait_for(1)
    _, body = await api.get(f"/v1/callbacks/{cb_id}/deliveries")
    delivery = body["deliveries"][0]["deliveryId"]
    c = Console(str(app_client.make_url("/")))
    try:
        await c.sign_in(await make_key(database, "acme", ["events:read"]))
        # its outcome is recorded (the row leaves the queue), so the count below can only be a retry
        await wait_until(lambda: database.pool.fetchval("SELECT count(*) = 0 FROM queue"))
        status, page = await c.get(f"/console/deliveries/{delivery}")
        assert status == 200 and "Retry now" not in page and "/retry" not in page
        status, page = await c.post(f"/console/deliveries/{delivery}/retry")
        assert status == 403 and "callbacks:manage" in page
        assert await database.pool.fetchval("SELECT count(*) FROM queue") == 0  # nothing was queued again
    finally:
        await c.close()


# --- hostile input -----------------------------------------------------------------------------------


def assert_escaped(page: str, value: str) -> None:
    """The value is on the page only as text: escaped as the templates escape it, never raw markup, never a link."""
    assert str(escape(value)) in page, value
    if value != str(escape(value)):
        assert value not in page, value
    assert 'href="javascript:' not in page and "src=x" not in page.replace("src=x onerror", "")


@pytest.mark.parametrize("payload", HOSTILE, ids=["script", "attribute", "javascript-url"])
async def test_every_displayed_field_is_escaped(console: Console, api: Api, receiver, payload: str):
    receiver.mode, receiver.fail_text = "fail", f"error page {payload}"
    cb_id, _ = await setup_callback(api, receiver, name=f"hook {payload}"[:100])
    fields = {"recipient": f"{payload}@example.com", "definitionKey": payload[:100],
              "data": {"note": payload, payload: "key", "link": payload}}  # fmt: skip
    await record(api, event(payload, "sent", **fields))
    await receiver.wait_for(1)

    async def attempted() -> bool:
        _, body = await api.get(f"/v1/callbacks/{cb_id}/deliveries")
        return bool(body["deliveries"]) and body["deliveries"][0]["attemptCount"] >= 1

    await wait_until(attempted)
    _, page = await search(console)
    for value in (payload, f"{payload}@example.com"):
        assert_escaped(page.split("<table", 1)[1], value)
    _, page = await search(console, recipient=f"{payload}@example.com", definition=payload)
    assert result_keys(page) == [payload]  # found, and the form echoes the hostile values escaped
    assert_escaped(page, f"{payload}@example.com")

    status, page = await console.get("/console/messages/" + quote(payload, safe=""))
    assert status == 200
    main = page.split("<main", 1)[1]
    for value in (payload, f"{payload}@example.com", f"hook {payload}"):
        assert_escaped(main, value)
    dlv = re.search(r'href="/console/deliveries/(dlv_\d+)"', page)
    assert dlv
    status, page = await console.get(f"/console/deliveries/{dlv[1]}")
    main = page.split("<main", 1)[1]
    assert_escaped(main, f"error page {payload}")
    assert_escaped(main, f"hook {payload}")
    assert_escaped(main, payload)
