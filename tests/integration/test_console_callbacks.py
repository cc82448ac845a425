"""The console's Callbacks view (also the portal's): the list with each callback's health, a new callback
whose signing secret is shown once, the handshake completed by a pasted key, a callback's page (health,
latency, deliveries, the attempt log with each request's headers and body and the response excerpt), and
its actions: retry, recover a window, rotate, pause and resume, send a test event. A key without
callbacks:manage sees no buttons and is refused anyway; another account's callbacks are 404; every
displayed field is escaped."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dispatcher import ids
from tests.conftest import Api, make_key, setup_callback, wait_until
from tests.console import Console
from tests.integration.test_signatures_v1a import verifies
from tests.receiver import Receiver

HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "javascript:alert(1)"]


async def post_event(api: Api, key: str, type_: str = "sent", **fields: Any) -> None:
    status, body = await api.post("/v1/events", {"type": type_, "messageKey": key, **fields})
    assert status == 201, body


async def delivery_status(api: Api, cb_id: str) -> list[str]:
    _, body = await api.get(f"/v1/callbacks/{cb_id}/deliveries")
    return [d["status"] for d in body["deliveries"]]


async def settled(api: Api, cb_id: str, expected: list[str]) -> None:
    async def done() -> bool:
        return await delivery_status(api, cb_id) == expected

    await wait_until(done)


def secret_on(page: str) -> str | None:
    found = re.search(r"<code class=\"reveal\" data-secret>(whsec_[^<]+)</code>", page)
    return found[1] if found else None


# --- list and detail -----------------------------------------------------------------------------


async def test_the_list_shows_state_handshake_success_rate_and_last_failure(
    console: Console, api: Api, receiver: Receiver
):
    cb_id, _ = await setup_callback(api, receiver, name="orders")
    await post_event(api, "m-1")
    await settled(api, cb_id, ["succeeded"])
    receiver.mode = "fail"
    await post_event(api, "m-2")
    await settled(api, cb_id, ["succeeded", "failed"])  # 1 + 3 retries answered 500
    status, page = await console.get("/console/callbacks")
    assert status == 200
    row = page.split(f'href="/console/callbacks/{cb_id}"', 1)[1].split("</tr>", 1)[0]
    assert ">orders</a>" in row and receiver.url in row
    assert "status-active" in row and "status-delivered" in row  # state, and the handshake's request
    assert "20.0 %" in row and "of 5" in row  # 1 of 5 requests answered 2xx
    assert "HTTP 500" in row


async def test_a_callbacks_page_shows_its_figures_deliveries_and_attempt_log(
    console: Console, api: Api, receiver: Receiver
):
    cb_id, _ = await setup_callback(api, receiver, name="orders")
    await post_event(api, "m-1")
    await settled(api, cb_id, ["succeeded"])
    status, page = await console.get(f"/console/callbacks/{cb_id}")
    assert status == 200
    assert "<h1>orders</h1>" in page and "100.0 %" in page
    assert re.search(r'<svg class="chart"[^>]*role="img"', page) and "<circle " in page
    assert '<title id="latency-title">' in page and "Latency figures" in page  # the text alternative
    deliveries = page.split('id="deliveries"', 1)[1].split("</table>", 1)[0]
    assert 'data-live-refresh="/console/callbacks/' + cb_id + '/deliveries"' in page
    assert "<code>m-1</code>" in deliveries and "status-succeeded" in deliveries
    attempts = page.split('id="attempts-title"', 1)[1]
    assert "HTTP 200" in attempts and "ok" in attempts
    status, other_window = await console.get(f"/console/callbacks/{cb_id}?window=1h")
    assert status == 200 and 'aria-current="true">1h' in other_window


async def test_the_latency_chart_draws_p50_p90_p99_per_interval_with_a_table_of_the_figures(
    console: Console, api: Api, receiver: Receiver, database
):
    cb_id, _ = await setup_callback(api, receiver)
    number = ids.decode("cb", cb_id, "callback")
    for minutes_ago, scale in [(10, 1), (1, 10)]:  # two intervals of the last hour: 10..100 ms, then 100..1000 ms
        await database.pool.execute(
            "INSERT INTO attempts (account_id, callback_id, webhook_id, events, started_at, duration_ms, status_code)"
            " SELECT account_id, id, 'dlv_0', 1, now() - make_interval(mins => $2), n * 10 * $3, 200"
            " FROM callbacks, generate_series(1, 10) n WHERE id = $1",
            number, minutes_ago, scale,
        )  # fmt: skip
    status, page = await console.get(f"/console/callbacks/{cb_id}?window=1h")
    assert status == 200
    chart = page.split('<svg class="chart"', 1)[1].split("</svg>", 1)[0]
    assert chart.count("<polyline ") == 3 and chart.count("<circle ") == 6
    assert "p99 " in chart and ">991 ms</text>" in chart  # the top of the scale: the slowest p99
    figures = page.split("Latency figures", 1)[1].split("</table>", 1)[0]
    assert "<td>10</td><td>55.0</td><td>91.0</td><td>99.1</td>" in figures
    assert "<td>10</td><td>550.0</td><td>910.0</td><td>991.0</td>" in figures


async def test_the_deliveries_fragment_renders_only_the_table(console: Console, api: Api, receiver: Receiver):
    cb_id, _ = await setup_callback(api, receiver)
    await post_event(api, "m-1")
    await settled(api, cb_id, ["succeeded"])
    status, fragment = await console.get(f"/console/callbacks/{cb_id}/deliveries")
    assert status == 200
    assert fragment.lstrip().startswith("<table") and "<html" not in fragment and "m-1" in fragment


async def test_the_attempt_log_shows_the_requests_headers_body_and_the_response_excerpt(
    console: Console, api: Api, receiver: Receiver
):
    cb_id, _ = await setup_callback(api, receiver)
    receiver.mode, receiver.fail_text = "fail", "database is down: try later"
    await post_event(api, "m-1", data={"orderId": "o-42"})
    await settled(api, cb_id, ["failed"])
    _, page = await console.get(f"/console/callbacks/{cb_id}")
    link = re.search(r'href="(/console/callbacks/' + cb_id + r'/attempts/att_\d+)"', page)
    assert link
    status, attempt = await console.get(link[1])
    assert status == 200
    sent = receiver.events[-1]
    delivery_id = sent.headers["webhook-id"]
    assert f"<code>{delivery_id}</code>" in attempt
    assert "<code>webhook-timestamp</code>" in attempt and "<code>content-type</code>" in attempt
    assert "(not stored)" in attempt  # the signature is not kept
    body = html.unescape(attempt.split("<pre data-request-body>", 1)[1].split("</pre>", 1)[0])
    assert body == sent.body.decode()  # the request as it went out
    assert "database is down: try later" in attempt.split("<pre data-response>", 1)[1]
    assert "HTTP 500" in attempt


# --- a new callback and its handshake ------------------------------------------------------------


async def test_a_new_callback_shows_its_secret_once_and_subscribes_it(
    console: Console, api: Api, receiver: Receiver, database
):
    status, form = await console.get("/console/callbacks/new")
    assert status == 200 and 'name="url"' in form
    form = [("name", "orders"), ("url", receiver.url), ("description", "the shop")]
    status, page = await console.post("/console/callbacks", [*form, ("type", "bounced"), ("type", "complained")])
    assert status == 200
    secret = secret_on(page)
    assert secret and "Handshake" in page and "Verify" in page
    [req] = await receiver.wait_for(1, events_only=False)
    req.verify(secret)  # the verification request is signed with the secret shown
    cb_id = req.json["callbackId"]
    _, subs = await api.get(f"/v1/subscriptions?callbackId={cb_id}")
    assert [s["eventTypes"] for s in subs["subscriptions"]] == [["bounced", "complained"]]
    _, later = await console.get(f"/console/callbacks/{cb_id}")
    assert secret not in later and "data-secret" not in later
    _, listed = await console.get("/console/callbacks")
    assert secret not in listed


async def test_a_new_callback_subscribes_to_every_message_event_by_default(
    console: Console, api: Api, receiver: Receiver
):
    await console.get("/console/callbacks/new")
    status, _ = await console.post("/console/callbacks", {"name": "orders", "url": receiver.url})
    assert status == 200
    _, subs = await api.get("/v1/subscriptions")
    assert [s["eventTypes"] for s in subs["subscriptions"]] == [["*"]]


async def test_a_refused_new_callback_shows_the_form_again_with_the_reason(console: Console, api: Api):
    await console.get("/console/callbacks/new")
    status, page = await console.post("/console/callbacks", {"name": "orders", "url": "ftp://example.com/x"})
    assert status == 400 and 'role="alert"' in page and 'value="orders"' in page
    _, body = await api.get("/v1/callbacks")
    assert body["callbacks"] == []


async def test_pasting_the_verification_key_completes_the_handshake(console: Console, api: Api, receiver: Receiver):
    await console.get("/console/callbacks/new")
    await console.post("/console/callbacks", {"name": "orders", "url": receiver.url})
    [req] = await receiver.wait_for(1, events_only=False)
    cb_id = req.json["callbackId"]
    status, page = await console.post(f"/console/callbacks/{cb_id}/verify", {"verificationKey": "wrong"})
    assert status == 400 and "does not match" in page
    await console.get(f"/console/callbacks/{cb_id}")
    status, page = await console.post(
        f"/console/callbacks/{cb_id}/verify", {"verificationKey": req.json["verificationKey"]}
    )
    assert status == 200 and "events flow to it now" in page and "status-active" in page
    assert (await api.get(f"/v1/callbacks/{cb_id}"))[1]["status"] == "active"


async def test_send_a_new_key_sends_a_fresh_verification_request(console: Console, api: Api, receiver: Receiver):
    status, cb = await api.post("/v1/callbacks", {"name": "orders", "url": receiver.url})
    await receiver.wait_for(1, events_only=False)
    await console.get(f"/console/callbacks/{cb['callbackId']}")
    status, page = await console.post(f"/console/callbacks/{cb['callbackId']}/verification")
    assert status == 200 and "A new verification key was sent" in page
    assert len(receiver.requests) == 2  # answered before the page came back
    new_key = receiver.requests[1].json["verificationKey"]
    assert (await api.post(f"/v1/callbacks/{cb['callbackId']}/verify", {"verificationKey": new_key}))[0] == 200


# --- actions -------------------------------------------------------------------------------------


async def test_rotate_shows_the_new_secret_once_and_it_signs(console: Console, api: Api, receiver: Receiver):
    cb_id, old = await setup_callback(api, receiver)
    await console.get(f"/console/callbacks/{cb_id}")
    status, page = await console.post(f"/console/callbacks/{cb_id}/rotate")
    assert status == 200
    new = secret_on(page)
    assert new and new != old
    _, later = await console.get(f"/console/callbacks/{cb_id}")
    assert new not in later
    await post_event(api, "m-1")
    [req] = await receiver.wait_for(1)
    req.verify(new)
    req.verify(old)  # still valid during the grace period


async def test_pause_and_resume_from_the_console(console: Console, api: Api, receiver: Receiver, database):
    cb_id, _ = await setup_callback(api, receiver)
    _, page = await console.get(f"/console/callbacks/{cb_id}")
    assert "/pause" in page and "/resume" not in page
    status, page = await console.post(f"/console/callbacks/{cb_id}/pause")
    assert status == 200 and "Paused:" in page and "/resume" in page and "status-paused" in page
    assert (await api.get(f"/v1/callbacks/{cb_id}"))[1]["paused"] is True
    status, page = await console.post(f"/console/callbacks/{cb_id}/resume")
    assert status == 200 and "Resumed:" in page
    assert (await api.get(f"/v1/callbacks/{cb_id}"))[1]["paused"] is False


async def test_retry_sends_a_failed_delivery_again(console: Console, api: Api, receiver: Receiver):
    cb_id, _ = await setup_callback(api, receiver)
    receiver.mode = "fail"
    await post_event(api, "m-1")
    await settled(api, cb_id, ["failed"])
    receiver.mode = "ok"
    _, page = await console.get(f"/console/callbacks/{cb_id}")
    action = re.search(r'action="(/console/callbacks/' + cb_id + r'/deliveries/dlv_\d+/retry)"', page)
    assert action
    status, page = await console.post(action[1])
    assert status == 200 and "queued to be sent again" in page
    await settled(api, cb_id, ["succeeded"])


async def test_retry_refuses_another_callbacks_delivery(console: Console, api: Api, receiver: Receiver):
    cb_id, _ = await setup_callback(api, receiver, name="one")
    other = await Receiver().start()
    try:
        other_id, _ = await setup_callback(api, other, name="two", event_types=["bounced"])
        await post_event(api, "m-1")
        await settled(api, cb_id, ["succeeded"])
        _, body = await api.get(f"/v1/callbacks/{cb_id}/deliveries")
        await console.get(f"/console/callbacks/{other_id}")
        status, _ = await console.post(
            f"/console/callbacks/{other_id}/deliveries/{body['deliveries'][0]['deliveryId']}/retry"
        )
        assert status == 404
    finally:
        await other.stop()


async def test_recover_queues_a_windows_failed_deliveries_again(console: Console, api: Api, receiver: Receiver):
    cb_id, _ = await setup_callback(api, receiver)
    receiver.mode = "fail"
    await post_event(api, "m-1")
    await post_event(api, "m-2")
    await settled(api, cb_id, ["failed", "failed"])
    receiver.mode = "ok"
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    await console.get(f"/console/callbacks/{cb_id}")
    status, page = await console.post(f"/console/callbacks/{cb_id}/recover", {"since": since, "until": ""})
    assert status == 200 and "2 failed deliveries queued again." in page
    await settled(api, cb_id, ["succeeded", "succeeded"])


async def test_a_test_event_from_the_console_is_delivered_and_marked(console: Console, api: Api, receiver: Receiver):
    cb_id, secret = await setup_callback(api, receiver)
    await console.get(f"/console/callbacks/{cb_id}")
    status, page = await console.post(f"/console/callbacks/{cb_id}/test", {"type": "opened"})
    assert status == 200 and "A test event is on its way." in page
    [req] = await receiver.wait_for(1)
    payload = req.verify(secret)
    assert payload["type"] == "opened" and payload["data"]["test"] is True
    await settled(api, cb_id, ["succeeded"])
    _, page = await console.get(f"/console/callbacks/{cb_id}")
    assert "status-test" in page.split('id="deliveries"', 1)[1]


# --- delivery controls: signature scheme, ordering, rate limit ----------------------------------------


def public_key_on(page: str) -> str | None:
    found = re.search(r"<code data-public-key>(whpk_[^<]+)</code>", page)
    return found[1] if found else None


def field_error(page: str, input_id: str) -> str:
    """The message shown beside a field the form refused (and the field marked invalid)."""
    field = re.search(rf'<(?:input|select) id="{input_id}"[^>]*>', page)
    assert field and 'aria-invalid="true"' in field[0] and f'aria-describedby="{input_id}-error"' in field[0]
    found = re.search(rf'<p class="error field-error" id="{input_id}-error">([^<]*)</p>', page)
    assert found
    return html.unescape(found[1])


async def test_a_new_callback_takes_a_v1a_signature_message_key_ordering_and_a_rate_limit(
    console: Console, api: Api, receiver: Receiver
):
    status, form = await console.get("/console/callbacks/new")
    assert status == 200
    assert 'name="signature"' in form and 'name="ordering"' in form and 'name="perSecond"' in form
    controls = {"signature": "v1a", "ordering": "messageKey", "perSecond": "2.5", "burst": "5"}
    status, page = await console.post("/console/callbacks", {"name": "orders", "url": receiver.url, **controls})
    assert status == 200 and secret_on(page) is None  # v1a: no secret to show, a public key instead
    [handshake] = await receiver.wait_for(1, events_only=False)
    _, cb = await api.get(f"/v1/callbacks/{handshake.json['callbackId']}")
    assert cb["signature"] == "v1a" and cb["ordering"] == "messageKey"
    assert cb["rateLimit"] == {"perSecond": 2.5, "burst": 5}
    assert public_key_on(page) == cb["publicKey"] and verifies(cb["publicKey"], handshake)
    assert "2.5 per second, burst 5" in page and "each message's events in order" in page


async def test_a_new_callbacks_burst_defaults_to_one_seconds_worth(console: Console, api: Api, receiver: Receiver):
    await console.get("/console/callbacks/new")
    status, _ = await console.post("/console/callbacks", {"name": "orders", "url": receiver.url, "perSecond": "3"})
    assert status == 200
    _, body = await api.get("/v1/callbacks")
    [cb] = body["callbacks"]
    assert cb["rateLimit"] == {"perSecond": 3.0, "burst": 3} and cb["signature"] == "v1" and cb["ordering"] == "none"


@pytest.mark.parametrize(
    ("per_second", "burst", "input_id", "reason"),
    [
        ("0", "", "new-per-second", "greater than 0"),
        ("lots", "", "new-per-second", "not a number"),
        ("nan", "", "new-per-second", "not a number"),
        ("1001", "", "new-per-second", "less than or equal to 1000"),
        ("5", "2.5", "new-burst", "not a whole number"),
        ("5", "0", "new-burst", "greater than or equal to 1"),
        ("", "5", "new-per-second", "requests per second too"),
    ],
)
async def test_a_refused_rate_limit_shows_beside_its_field_and_creates_nothing(
    console: Console, api: Api, receiver: Receiver, per_second: str, burst: str, input_id: str, reason: str
):
    await console.get("/console/callbacks/new")
    typed = {"name": "orders", "url": receiver.url, "ordering": "messageKey", "perSecond": per_second, "burst": burst}
    status, page = await console.post("/console/callbacks", typed)
    assert status == 400 and 'role="alert"' in page
    assert reason in field_error(page, input_id)
    assert 'value="orders"' in page and f'value="{per_second}"' in page  # the form as typed
    assert re.search(r'<option value="messageKey" selected>', page)
    _, body = await api.get("/v1/callbacks")
    assert body["callbacks"] == []


async def test_a_callbacks_page_shows_and_changes_its_ordering_and_rate_limit(
    console: Console, api: Api, receiver: Receiver
):
    cb_id, _ = await setup_callback(api, receiver)
    _, page = await console.get(f"/console/callbacks/{cb_id}")
    state = page.split('id="state"', 1)[1].split("</dl>", 1)[0]
    assert "<dt>Ordering</dt><dd>none</dd>" in state and "<dt>Rate limit</dt><dd>none</dd>" in state
    assert f'action="/console/callbacks/{cb_id}/controls"' in page
    controls = {"signature": "v1", "ordering": "messageKey", "perSecond": "10", "burst": "20"}
    status, page = await console.post(f"/console/callbacks/{cb_id}/controls", controls)
    assert status == 200 and "Delivery controls saved." in page
    assert "10 per second, burst 20" in page and 'id="cb-per-second"' in page and 'value="20"' in page
    _, cb = await api.get(f"/v1/callbacks/{cb_id}")
    assert cb["ordering"] == "messageKey" and cb["rateLimit"] == {"perSecond": 10.0, "burst": 20}
    assert cb["signature"] == "v1"  # the same scheme: no new key
    status, page = await console.post(
        f"/console/callbacks/{cb_id}/controls", {"signature": "v1", "ordering": "none", "perSecond": "", "burst": ""}
    )
    assert status == 200 and "<dt>Rate limit</dt><dd>none</dd>" in page
    _, cb = await api.get(f"/v1/callbacks/{cb_id}")
    assert cb["ordering"] == "none" and cb["rateLimit"] is None


async def test_a_refused_change_of_controls_shows_beside_its_field_and_changes_nothing(
    console: Console, api: Api, receiver: Receiver
):
    cb_id, _ = await setup_callback(api, receiver)
    await console.get(f"/console/callbacks/{cb_id}")
    typed = {"signature": "v1a", "ordering": "messageKey", "perSecond": HOSTILE[1], "burst": ""}
    status, page = await console.post(f"/console/callbacks/{cb_id}/controls", typed)
    assert status == 400 and 'role="alert"' in page and "not saved" in page
    assert "not a number" in field_error(page, "cb-per-second")
    assert_escaped(page)  # what was typed comes back as text
    assert 'value="&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"' in page
    _, cb = await api.get(f"/v1/callbacks/{cb_id}")
    assert (cb["signature"], cb["ordering"], cb["rateLimit"]) == ("v1", "none", None)


async def test_switching_the_signature_on_a_callbacks_page_makes_a_key_of_the_new_scheme(
    console: Console, api: Api, receiver: Receiver
):
    cb_id, old = await setup_callback(api, receiver)
    await console.get(f"/console/callbacks/{cb_id}")
    status, page = await console.post(
        f"/console/callbacks/{cb_id}/controls", {"signature": "v1a", "ordering": "none", "perSecond": ""}
    )
    assert status == 200 and secret_on(page) is None and "New key pair, public key whpk_" in page
    _, cb = await api.get(f"/v1/callbacks/{cb_id}")
    assert cb["signature"] == "v1a" and public_key_on(page) == cb["publicKey"]
    await post_event(api, "m-1")
    [req] = await receiver.wait_for(1)
    assert verifies(cb["publicKey"], req)
    req.verify(old)  # the old secret signs on during the grace period
    status, page = await console.post(
        f"/console/callbacks/{cb_id}/controls", {"signature": "v1", "ordering": "none", "perSecond": ""}
    )
    new = secret_on(page)
    assert status == 200 and new and new != old  # back to v1: a new secret, shown this once
    _, later = await console.get(f"/console/callbacks/{cb_id}")
    assert new not in later


async def test_v1a_needs_the_standard_format_and_the_page_says_so(console: Console, api: Api, receiver: Receiver):
    cb_id, _ = await setup_callback(api, receiver)
    assert (await api.patch(f"/v1/callbacks/{cb_id}", {"format": "ens"}))[0] == 200
    await console.get(f"/console/callbacks/{cb_id}")
    status, page = await console.post(
        f"/console/callbacks/{cb_id}/controls", {"signature": "v1a", "ordering": "none", "perSecond": ""}
    )
    assert status == 400 and "needs format 'standard'" in field_error(page, "cb-signature")
    assert (await api.get(f"/v1/callbacks/{cb_id}"))[1]["signature"] == "v1"


# --- scopes, isolation, the portal ---------------------------------------------------------------


async def test_a_key_without_callbacks_manage_sees_no_buttons_and_is_refused(
    app_client: Any, api: Api, receiver: Receiver, database
):
    cb_id, _ = await setup_callback(api, receiver)
    await post_event(api, "m-1")
    await settled(api, cb_id, ["succeeded"])
    reader = Console(str(app_client.make_url("/")))
    try:
        await reader.sign_in(await make_key(database, "acme", ["events:read"]))
        status, page = await reader.get(f"/console/callbacks/{cb_id}")
        assert status == 200 and "m-1" in page
        assert 'method="post"' not in page.split("</header>", 1)[1]  # no button, no form but sign-out
        status, listed = await reader.get("/console/callbacks")
        assert status == 200 and "New callback" not in listed
        assert (await reader.get("/console/callbacks/new"))[0] == 403
        _, body = await api.get(f"/v1/callbacks/{cb_id}/deliveries")
        delivery = body["deliveries"][0]["deliveryId"]
        for path, form in [
            ("/pause", {}), ("/resume", {}), ("/rotate", {}), ("/test", {}), ("/verification", {}),
            ("/verify", {"verificationKey": "x"}), ("/recover", {"since": "2026-01-01T00:00"}),
            (f"/deliveries/{delivery}/retry", {}), ("/controls", {"ordering": "messageKey"}),
        ]:  # fmt: skip
            status, _ = await reader.post(f"/console/callbacks/{cb_id}{path}", form)
            assert status == 403, path
        status, _ = await reader.post("/console/callbacks", {"name": "x", "url": receiver.url})
        assert status == 403
        assert (await api.get(f"/v1/callbacks/{cb_id}"))[1]["paused"] is False
    finally:
        await reader.close()


async def test_a_key_with_neither_scope_is_refused_the_pages(app_client: Any, api: Api, receiver: Receiver, database):
    cb_id, _ = await setup_callback(api, receiver)
    sender = Console(str(app_client.make_url("/")))
    try:
        await sender.sign_in(await make_key(database, "acme", ["messages:send"]))
        assert (await sender.get("/console/callbacks"))[0] == 403
        assert (await sender.get(f"/console/callbacks/{cb_id}"))[0] == 403
    finally:
        await sender.close()


async def test_another_accounts_callbacks_are_not_found(app_client: Any, api: Api, other_api: Api, receiver: Receiver):
    cb_id, _ = await setup_callback(api, receiver)
    await post_event(api, "m-1")
    await settled(api, cb_id, ["succeeded"])
    _, body = await api.get(f"/v1/callbacks/{cb_id}/deliveries")
    delivery = body["deliveries"][0]["deliveryId"]
    _, attempts = await api.get(f"/v1/callbacks/{cb_id}/attempts")
    attempt = attempts["attempts"][0]["attemptId"]
    stranger = Console(str(app_client.make_url("/")))
    try:
        await stranger.sign_in(other_api.key)
        _, listed = await stranger.get("/console/callbacks")
        assert cb_id not in listed
        for path in ["", "/deliveries", f"/attempts/{attempt}"]:
            assert (await stranger.get(f"/console/callbacks/{cb_id}{path}"))[0] == 404, path
        for path in ["/pause", "/rotate", "/test", f"/deliveries/{delivery}/retry", "/controls"]:
            assert (await stranger.post(f"/console/callbacks/{cb_id}{path}"))[0] == 404, path
        assert (await stranger.get("/console/callbacks/cb_x"))[0] == 404
    finally:
        await stranger.close()
    assert (await api.get(f"/v1/callbacks/{cb_id}"))[1]["paused"] is False


async def portal(api: Api, app_client: Any, callback_ids: list[str] | str) -> Console:
    body = {"callbackIds": callback_ids} if isinstance(callback_ids, list) else {"all": True}
    status, link = await api.post("/v1/portal-links", body)
    assert status == 201, link
    c = Console(str(app_client.make_url("/")))
    c.path = "/" + link["url"].split("/", 3)[3].removesuffix("/callbacks")  # type: ignore[attr-defined]
    return c


async def test_a_portal_link_reaches_only_its_callbacks_and_a_new_one_joins_it(
    app_client: Any, api: Api, receiver: Receiver
):
    mine, _ = await setup_callback(api, receiver, name="mine")
    other = await Receiver().start()
    try:
        theirs, _ = await setup_callback(api, other, name="theirs")
        c = await portal(api, app_client, [mine])
        base = c.path  # type: ignore[attr-defined]
        try:
            status, listed = await c.get(f"{base}/callbacks")
            assert status == 200 and ">mine</a>" in listed and "theirs" not in listed
            assert f'href="{base}/callbacks/{mine}"' in listed
            assert (await c.get(f"{base}/callbacks/{theirs}"))[0] == 404
            _, page = await c.get(f"{base}/callbacks/{mine}")
            assert f'action="{base}/callbacks/{mine}/pause"' in page
            assert (await c.post(f"{base}/callbacks/{theirs}/pause"))[0] == 404
            await c.get(f"{base}/callbacks/new")
            added = {"name": "added", "url": receiver.url, "ordering": "messageKey", "perSecond": "4"}
            status, page = await c.post(f"{base}/callbacks", added)
            assert status == 200 and secret_on(page) and "4 per second, burst 4" in page
            assert re.search(rf'action="{base}/callbacks/cb_\w+/controls"', page)
            _, listed = await c.get(f"{base}/callbacks")
            assert ">added</a>" in listed and "theirs" not in listed
        finally:
            await c.close()
    finally:
        await other.stop()


# --- escaping ------------------------------------------------------------------------------------


def assert_escaped(page: str) -> None:
    assert "<script>alert(1)" not in page
    assert "<img src=x" not in page
    assert 'href="javascript:' not in page and "href='javascript:" not in page


async def test_every_displayed_field_is_escaped(console: Console, api: Api, receiver: Receiver, database):
    url = receiver.url + "?javascript:alert(1)"
    status, cb = await api.post(
        "/v1/callbacks", {"name": HOSTILE[0] + HOSTILE[1], "url": url, "description": " ".join(HOSTILE)}
    )
    assert status == 201, cb
    cb_id = cb["callbackId"]
    [req] = await receiver.wait_for(1, events_only=False)
    await api.post(f"/v1/callbacks/{cb_id}/verify", {"verificationKey": req.json["verificationKey"]})
    await api.post("/v1/subscriptions", {"name": "all", "callbackId": cb_id, "eventTypes": ["*"]})
    receiver.mode, receiver.fail_text = "fail", " ".join(HOSTILE)
    await post_event(api, "m-1", data={"note": " ".join(HOSTILE)}, recipient="x@example.com")
    await settled(api, cb_id, ["failed"])
    pages = [(await console.get(p))[1] for p in ["/console/callbacks", f"/console/callbacks/{cb_id}",
                                                  f"/console/callbacks/{cb_id}/deliveries"]]  # fmt: skip
    link = re.search(r'href="(/console/callbacks/' + cb_id + r'/attempts/att_\d+)"', pages[1])
    assert link
    pages.append((await console.get(link[1]))[1])
    for page in pages:
        assert_escaped(page)
    detail, attempt = pages[1], pages[3]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail  # name and description, as text
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in detail
    assert "javascript:alert(1)" in detail  # the URL's text, never a link
    body = attempt.split("<pre data-request-body>", 1)[1].split("</pre>", 1)[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body  # the request body, escaped
    response = attempt.split("<pre data-response>", 1)[1].split("</pre>", 1)[0]
    assert html.unescape(response) == " ".join(HOSTILE)
    # The callback's id in links is ours (cb_<digits>), never text it was given.
    assert ids.decode("cb", cb_id, "callback") > 0
