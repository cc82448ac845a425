"""Callbacks, subscriptions and webhook delivery: real receivers on real sockets, signatures checked
with the public standardwebhooks package, a compressed retry schedule from settings."""

from __future__ import annotations

import asyncio
import time

import pytest

from dispatcher.runtime import create_app
from tests.conftest import Api, make_key, setup_callback, wait_until
from tests.receiver import Receiver


async def post_event(api: Api, message_key: str = "m-1", type_: str = "sent", **extra) -> str:
    status, body = await api.post("/v1/events", {"type": type_, "messageKey": message_key, **extra})
    assert status == 201, body
    return body["eventId"]


async def deliveries_of(api: Api, callback_id: str, **query) -> list[dict]:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    status, body = await api.get(f"/v1/callbacks/{callback_id}/deliveries?{qs}")
    assert status == 200, body
    return body["deliveries"]


# --- registration and ownership -----------------------------------------------------------------


async def test_new_callback_is_pending_and_gets_a_signed_verification_request(api: Api, receiver: Receiver):
    status, cb = await api.post("/v1/callbacks", {"name": "orders", "url": receiver.url})
    assert status == 201
    assert cb["status"] == "pending_verification"
    assert cb["signingSecret"].startswith("whsec_") and len(cb["signingSecret"]) >= 6 + 32
    [req] = await receiver.wait_for(1, events_only=False)
    assert req.json == {"callbackId": cb["callbackId"], "verificationKey": req.json["verificationKey"]}
    req.verify(cb["signingSecret"])
    _, again = await api.get(f"/v1/callbacks/{cb['callbackId']}")
    assert "signingSecret" not in again or again.get("signingSecret") is None


async def test_verifying_with_the_key_activates_the_callback(api: Api, receiver: Receiver):
    _, cb = await api.post("/v1/callbacks", {"name": "orders", "url": receiver.url})
    [req] = await receiver.wait_for(1, events_only=False)
    status, body = await api.post(f"/v1/callbacks/{cb['callbackId']}/verify", {"verificationKey": "wrong"})
    assert status == 400 and body["error"]["code"] == "invalid_verification_key"
    status, body = await api.post(f"/v1/callbacks/{cb['callbackId']}/verify", req.json)
    assert status == 400  # callbackId is not a field of the verify body
    status, body = await api.post(
        f"/v1/callbacks/{cb['callbackId']}/verify", {"verificationKey": req.json["verificationKey"]}
    )
    assert status == 200 and body["status"] == "active"


async def test_fresh_verification_key_replaces_the_old_one(api: Api, receiver: Receiver):
    _, cb = await api.post("/v1/callbacks", {"name": "orders", "url": receiver.url})
    await receiver.wait_for(1, events_only=False)
    status, body = await api.post(f"/v1/callbacks/{cb['callbackId']}/verification")
    assert status == 200 and body["status"] == "delivered", body  # it answers once the request is answered
    reqs = receiver.requests
    old, new = reqs[0].json["verificationKey"], reqs[1].json["verificationKey"]
    assert old != new
    assert (await api.post(f"/v1/callbacks/{cb['callbackId']}/verify", {"verificationKey": old}))[0] == 400
    assert (await api.post(f"/v1/callbacks/{cb['callbackId']}/verify", {"verificationKey": new}))[0] == 200


async def test_unverified_callback_receives_no_events(api: Api, receiver: Receiver, database):
    _, cb = await api.post("/v1/callbacks", {"name": "orders", "url": receiver.url})
    await api.post("/v1/subscriptions", {"name": "all", "callbackId": cb["callbackId"], "eventTypes": ["*"]})
    await post_event(api)
    # Fan-out made no delivery, so there is nothing a worker could ever send.
    assert await database.pool.fetchval("SELECT (SELECT count(*) FROM queue) + (SELECT count(*) FROM deliveries)") == 0
    assert receiver.events == []


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://example.com/hook", "invalid_url"),
        ("https://user:pw@example.com/hook", "invalid_url"),
        ("not a url", "invalid_url"),
        ("https://127.0.0.1/hook", "forbidden_address"),
        ("https://localhost/hook", "forbidden_address"),
        ("https://10.1.2.3/hook", "forbidden_address"),
        ("https://172.16.0.1/hook", "forbidden_address"),
        ("https://192.168.1.1/hook", "forbidden_address"),
        ("https://169.254.169.254/latest/meta-data", "forbidden_address"),
        ("https://100.64.0.1/hook", "forbidden_address"),
        ("https://224.0.0.1/hook", "forbidden_address"),
        ("https://0.0.0.0/hook", "forbidden_address"),
        ("https://240.0.0.1/hook", "forbidden_address"),
        ("https://[::1]/hook", "forbidden_address"),
        ("https://[::ffff:127.0.0.1]/hook", "forbidden_address"),
        ("https://[::ffff:10.0.0.1]/hook", "forbidden_address"),
        ("https://[fe80::1]/hook", "forbidden_address"),
        ("https://[fc00::1]/hook", "forbidden_address"),
        ("https://[ff02::1]/hook", "forbidden_address"),
        ("https://[::]/hook", "forbidden_address"),
        ("https://[64:ff9b::a00:1]/hook", "forbidden_address"),
        ("https://[2002:7f00:1::]/hook", "forbidden_address"),
    ],
)
async def test_callback_urls_that_are_unsafe_are_refused(database, settings, aiohttp_client, url, code):
    strict = settings.model_copy(update={"allowed_networks": [], "allow_http_callbacks": False})
    client = await aiohttp_client(create_app(strict, database=database))
    api = Api(client, await make_key(database, "acme"))
    status, body = await api.post("/v1/callbacks", {"name": "x", "url": url})
    # a malformed URL is a bad request; a well-formed one this deployment will not call is refused
    assert status == (400 if code == "invalid_url" else 403), body
    assert body["error"]["field"] == "url" and body["error"]["code"] == code
    assert await database.pool.fetchval("SELECT count(*) FROM callbacks") == 0


async def test_plain_http_needs_to_be_allowed(database, settings, aiohttp_client):
    strict = settings.model_copy(update={"allow_http_callbacks": False})
    client = await aiohttp_client(create_app(strict, database=database))
    api = Api(client, await make_key(database, "acme"))
    status, body = await api.post("/v1/callbacks", {"name": "x", "url": "http://127.0.0.1:9/hook"})
    assert status == 403 and body["error"]["code"] == "https_required" and "https" in body["error"]["message"]


async def test_address_allowed_at_registration_is_checked_again_at_connect_time(
    database, settings, aiohttp_client, receiver: Receiver
):
    """A host that later resolves somewhere forbidden (DNS rebinding) is refused when connecting."""
    api = Api(await aiohttp_client(create_app(settings, database=database)), await make_key(database, "acme"))
    callback_id, _ = await setup_callback(api, receiver)
    await api.client.close()
    strict = settings.model_copy(update={"allowed_networks": []})
    api = Api(await aiohttp_client(create_app(strict, database=database)), api.key)
    await post_event(api)

    async def failed_attempt():
        rows = await deliveries_of(api, callback_id)
        return rows and rows[0]["lastError"]

    assert await wait_until(failed_attempt) == "forbidden_address"
    assert receiver.events == []


# --- delivery ---------------------------------------------------------------------------------


async def test_event_reaches_the_subscribed_callback_signed_per_standard_webhooks(api: Api, receiver: Receiver):
    _, secret = await setup_callback(api, receiver)
    event_id = await post_event(api, "order-1", recipient="a@example.com", definitionKey="receipt")
    [req] = await receiver.wait_for(1)
    payload = req.verify(secret)
    assert payload["type"] == "sent"
    assert payload["data"]["eventId"] == event_id
    assert payload["data"]["messageKey"] == "order-1"
    assert payload["data"]["recipient"] == "a@example.com"
    assert payload["data"]["definitionKey"] == "receipt"
    assert payload["timestamp"] == payload["data"]["occurredAt"]
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["User-Agent"].startswith("dispatcher/")
    assert req.headers["webhook-id"].startswith("dlv_")
    assert abs(int(req.headers["webhook-timestamp"]) - time.time()) < 60


async def test_a_burst_of_events_wakes_the_worker_for_a_claim_per_claim_interval_not_per_event(
    database, settings, aiohttp_client, receiver: Receiver
):
    """Every commit notifies the worker; wakes within `claim_interval` of the last claim share the next.
    Counted by the worker's claims metric."""
    from dispatcher.api.keys import METRICS

    interval = 0.5
    app = create_app(settings.model_copy(update={"claim_interval": interval}), database=database)
    api = Api(await aiohttp_client(app), await make_key(database, "acme"))
    await setup_callback(api, receiver)

    def claims() -> float:
        return app[METRICS].registry.get_sample_value("dispatcher_worker_claims_total") or 0.0

    before, started = claims(), time.monotonic()
    for i in range(20):
        await post_event(api, f"m-{i}")
    await receiver.wait_for(20)
    assert claims() - before <= (time.monotonic() - started) / interval + 2


@pytest.mark.parametrize(
    "occurred",
    ["2026-01-02T03:04:05.120000+00:00", "2026-01-02T03:04:05+00:00", "2026-01-02T04:04:05.000001+01:00"],
)
async def test_webhook_timestamps_are_written_exactly_as_the_history_api_writes_them(
    api: Api, receiver: Receiver, occurred: str
):
    await setup_callback(api, receiver)
    await post_event(api, "stamped", occurredAt=occurred, data={"amount": 12.5, "n": None})
    [req] = await receiver.wait_for(1)
    _, history = await api.get("/v1/messages/stamped")
    [recorded] = history["events"]
    assert req.json["timestamp"] == req.json["data"]["occurredAt"] == recorded["occurredAt"]
    assert req.json["data"]["amount"] == 12.5
    assert req.json["data"]["n"] is None


async def test_typed_event_data_is_in_the_payload(api: Api, receiver: Receiver):
    _, secret = await setup_callback(api, receiver)
    await post_event(api, "m", "bounced", data={"bounceType": "hard", "smtpCode": 550, "reason": "unknown user"})
    [req] = await receiver.wait_for(1)
    data = req.verify(secret)["data"]
    assert (data["bounceType"], data["smtpCode"], data["reason"]) == ("hard", 550, "unknown user")


async def test_envelope_fields_win_over_event_data_keys_of_the_same_name(api: Api, receiver: Receiver):
    await setup_callback(api, receiver)
    data = {"eventId": "mine", "recipient": "spoof@example.com", "orderId": 9}
    event_id = await post_event(api, "env", recipient="a@example.com", data=data)
    [req] = await receiver.wait_for(1)
    sent = req.json["data"]
    assert (sent["eventId"], sent["recipient"], sent["orderId"]) == (event_id, "a@example.com", 9)
    assert req.body.count(b'"eventId"') == 1


async def test_event_goes_to_a_callback_once_even_when_several_subscriptions_match(
    api: Api, receiver: Receiver, database
):
    callback_id, _ = await setup_callback(api, receiver, event_types=["sent"])
    await api.post("/v1/subscriptions", {"name": "second", "callbackId": callback_id, "eventTypes": ["*"]})
    await post_event(api)
    await receiver.wait_for(1)
    assert await database.pool.fetchval("SELECT (SELECT count(*) FROM queue) + (SELECT count(*) FROM deliveries)") == 1
    assert len(receiver.events) == 1


async def test_subscription_filters_event_types_and_fields(api: Api, receiver: Receiver, database):
    await setup_callback(api, receiver, event_types=["bounced", "clicked"], filters={"definitionKey": "receipt"})
    await post_event(api, "a", "sent", definitionKey="receipt")
    await post_event(api, "b", "clicked", definitionKey="other", data={"url": "https://x"})
    await post_event(api, "c", "clicked", definitionKey="receipt", data={"url": "https://x"})
    await post_event(api, "d", "bounced", definitionKey="receipt", data={"bounceType": "soft"})
    await receiver.wait_for(2)
    # Only the matching events were fanned out: nothing else exists that a worker could send later.
    keys = await database.pool.fetch(
        "SELECT e.message_key FROM (SELECT event_id FROM queue UNION ALL SELECT event_id FROM deliveries) d"
        " JOIN events e ON e.id = d.event_id"
    )
    assert sorted(r["message_key"] for r in keys) == ["c", "d"]
    assert sorted(r.json["data"]["messageKey"] for r in receiver.events) == ["c", "d"]


async def test_events_recorded_while_a_subscription_is_paused_are_not_delivered(api: Api, receiver: Receiver, database):
    callback_id, _ = await setup_callback(api, receiver)
    _, subs = await api.get(f"/v1/subscriptions?callbackId={callback_id}")
    sub_id = subs["subscriptions"][0]["subscriptionId"]
    assert (await api.patch(f"/v1/subscriptions/{sub_id}", {"status": "paused"}))[1]["status"] == "paused"
    await post_event(api, "while-paused")
    await api.patch(f"/v1/subscriptions/{sub_id}", {"status": "active"})
    await post_event(api, "after-resume")
    await receiver.wait_for(1)
    keys = await database.pool.fetch(
        "SELECT e.message_key FROM (SELECT event_id FROM queue UNION ALL SELECT event_id FROM deliveries) d"
        " JOIN events e ON e.id = d.event_id"
    )
    assert [r["message_key"] for r in keys] == ["after-resume"]
    assert [r.json["data"]["messageKey"] for r in receiver.events] == ["after-resume"]


async def test_batching_callback_receives_arrays_oldest_first(api: Api, receiver: Receiver):
    _, secret = await setup_callback(api, receiver, batch=10)
    await api.post("/v1/events", {"events": [{"type": "sent", "messageKey": f"k{i:02}"} for i in range(25)]})

    async def all_arrived():
        return sum(len(r.json) for r in receiver.events) >= 25

    await wait_until(all_arrived)
    keys = []
    for req in receiver.events:
        batch = req.verify(secret)
        assert isinstance(batch, list) and 1 <= len(batch) <= 10
        assert req.headers["webhook-id"].startswith("batch_")
        keys += [e["data"]["messageKey"] for e in batch]
    assert sorted(keys) == [f"k{i:02}" for i in range(25)]
    assert len(receiver.events) <= 4
    for req in receiver.events:
        in_batch = [e["data"]["messageKey"] for e in req.json]
        assert in_batch == sorted(in_batch)


async def test_a_batch_is_one_attempt_in_the_history_of_each_delivery_it_carried(api: Api, receiver: Receiver):
    callback_id, _ = await setup_callback(api, receiver, batch=10)
    await api.post("/v1/events", {"events": [{"type": "sent", "messageKey": f"b{i}"} for i in range(5)]})
    done = await wait_until(lambda: _all_succeeded(api, callback_id, 5))
    sent = {r.headers["webhook-id"]: len(r.json) for r in receiver.events}
    logged = []
    for delivery in done:
        _, detail = await api.get(f"/v1/deliveries/{delivery['deliveryId']}")
        [attempt] = detail["attempts"]
        assert (attempt["number"], attempt["statusCode"]) == (1, 200)
        logged.append((attempt["webhookId"], attempt["events"]))
    assert sorted(logged) == sorted((wid, n) for wid, n in sent.items() for _ in range(n))


async def _all_succeeded(api: Api, callback_id: str, n: int) -> list[dict] | None:
    rows = await deliveries_of(api, callback_id, status="succeeded")
    return rows if len(rows) == n else None


async def test_secret_rotation_signs_with_both_secrets_during_the_grace_period(api: Api, receiver: Receiver):
    callback_id, old = await setup_callback(api, receiver)
    status, body = await api.post(f"/v1/callbacks/{callback_id}/rotate-secret")
    assert status == 200
    new = body["signingSecret"]
    assert new != old and new.startswith("whsec_")
    await post_event(api)
    [req] = await receiver.wait_for(1)
    assert len(req.headers["webhook-signature"].split(" ")) == 2
    req.verify(new)
    req.verify(old)


async def test_signing_secrets_are_encrypted_at_rest(api: Api, receiver: Receiver, database):
    _, secret = await setup_callback(api, receiver)
    raw = await database.pool.fetch("SELECT secret_enc FROM callback_secrets")
    assert raw and all(secret.encode() not in bytes(r["secret_enc"]) for r in raw)
    assert all(secret.removeprefix("whsec_").encode() not in bytes(r["secret_enc"]) for r in raw)


# --- failures, retries, attempt log -------------------------------------------------------------


async def test_failed_attempts_are_retried_and_every_attempt_is_logged(api: Api, receiver: Receiver):
    callback_id, _ = await setup_callback(api, receiver)
    receiver.mode = "fail"
    await post_event(api)
    await receiver.wait_for(2)
    receiver.mode = "ok"

    async def succeeded():
        rows = await deliveries_of(api, callback_id, status="succeeded")
        return rows[0] if rows else None

    delivery = await wait_until(succeeded)
    assert delivery["attemptCount"] == 3
    status, detail = await api.get(f"/v1/deliveries/{delivery['deliveryId']}")
    assert status == 200
    attempts = detail["attempts"]
    assert [a["number"] for a in attempts] == [1, 2, 3]
    assert [a["statusCode"] for a in attempts] == [500, 500, 200]
    assert attempts[0]["responseBody"] == "receiver exploded"
    assert all(a["durationMs"] >= 0 and a["startedAt"] for a in attempts)
    ids = {r.headers["webhook-id"] for r in receiver.events}
    assert ids == {delivery["deliveryId"]}  # stable across retries


async def test_a_callbacks_attempt_log_lists_every_request_oldest_first_by_outcome_and_in_pages(
    api: Api, receiver: Receiver
):
    callback_id, _ = await setup_callback(api, receiver)
    receiver.mode = "fail"
    await post_event(api)
    await receiver.wait_for(2)
    receiver.mode = "ok"
    [delivery] = await wait_until(lambda: deliveries_of(api, callback_id, status="succeeded"))
    status, body = await api.get(f"/v1/callbacks/{callback_id}/attempts")
    assert status == 200, body
    log = body["attempts"]
    assert [a["statusCode"] for a in log] == [500, 500, 200]
    assert {a["webhookId"] for a in log} == {delivery["deliveryId"]}
    assert all(a["events"] == 1 and a["attemptId"].startswith("att_") for a in log)
    _, detail = await api.get(f"/v1/deliveries/{delivery['deliveryId']}")
    assert [a["attemptId"] for a in detail["attempts"]] == [a["attemptId"] for a in log]
    _, failed = await api.get(f"/v1/callbacks/{callback_id}/attempts?outcome=failed")
    assert [a["statusCode"] for a in failed["attempts"]] == [500, 500]
    _, ok = await api.get(f"/v1/callbacks/{callback_id}/attempts?outcome=succeeded")
    assert [a["statusCode"] for a in ok["attempts"]] == [200]
    pages, cursor = [], ""
    while True:
        after = f"&cursor={cursor}" if cursor else ""
        _, page = await api.get(f"/v1/callbacks/{callback_id}/attempts?limit=2{after}")
        pages.append([a["attemptId"] for a in page["attempts"]])
        if not (cursor := page["nextCursor"]):
            break
    assert [a for page in pages for a in page] == [a["attemptId"] for a in log] and len(pages[0]) == 2
    status, body = await api.get(f"/v1/callbacks/{callback_id}/attempts?outcome=maybe")
    assert status == 400 and body["error"]["field"] == "outcome"


async def test_delivery_fails_visibly_when_the_schedule_is_exhausted_and_recover_requeues_it(
    api: Api, receiver: Receiver
):
    callback_id, _ = await setup_callback(api, receiver)
    receiver.mode = "fail"
    started = time.time()
    await post_event(api)

    async def failed():
        return await deliveries_of(api, callback_id, status="failed")

    [delivery] = await wait_until(failed)
    assert delivery["attemptCount"] == 4  # first try + 3 retries from the schedule
    receiver.mode = "ok"
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started - 60))
    status, body = await api.post(f"/v1/callbacks/{callback_id}/recover", {"since": since})
    assert status == 200 and body == {"requeued": 1}

    async def succeeded():
        return await deliveries_of(api, callback_id, status="succeeded")

    await wait_until(succeeded)


async def test_manual_retry_sends_a_delivery_again_whatever_its_state(api: Api, receiver: Receiver):
    callback_id, _ = await setup_callback(api, receiver)
    await post_event(api)
    await receiver.wait_for(1)
    [delivery] = await wait_until(lambda: deliveries_of(api, callback_id, status="succeeded"))
    status, _ = await api.post(f"/v1/deliveries/{delivery['deliveryId']}/retry")
    assert status == 202
    reqs = await receiver.wait_for(2)
    assert reqs[0].headers["webhook-id"] == reqs[1].headers["webhook-id"]


@pytest.mark.parametrize(
    ("mode", "kind"), [("slow", "timeout"), ("close", "connection_error"), ("redirect", "http_302")]
)
async def test_timeouts_dropped_connections_and_redirects_are_failures(api: Api, receiver: Receiver, mode, kind):
    callback_id, _ = await setup_callback(api, receiver)
    receiver.mode = mode
    await post_event(api)

    async def first_failure():
        rows = await deliveries_of(api, callback_id)
        return rows and rows[0]["lastError"]

    assert await wait_until(first_failure) == kind


async def test_410_gone_disables_the_callback_and_patch_re_enables_it(api: Api, receiver: Receiver):
    callback_id, _ = await setup_callback(api, receiver)
    marker = await Receiver().start()  # a second callback: its delivery of an event proves a claim ran
    receiver.mode = "gone"
    await post_event(api, "first")

    async def disabled():
        _, cb = await api.get(f"/v1/callbacks/{callback_id}")
        return cb["status"] == "disabled" and cb

    cb = await wait_until(disabled)
    assert "410" in cb["disabledReason"]
    receiver.mode = "ok"
    try:
        await setup_callback(api, marker, name="marker")
        await post_event(api, "while-disabled")
        await marker.wait_for(1)
    finally:
        await marker.stop()
    # The claim that sent the marker callback its copy passed over the disabled callback's rows.
    assert len(receiver.events) == 1
    pending = await deliveries_of(api, callback_id, status="pending")
    assert sorted(d["attemptCount"] for d in pending) == [0, 1]
    status, body = await api.patch(f"/v1/callbacks/{callback_id}", {"status": "active"})
    assert status == 200 and body["status"] == "active"
    await receiver.wait_for(3)
    assert {r.json["data"]["messageKey"] for r in receiver.events[1:]} == {"first", "while-disabled"}


async def test_429_retry_after_is_honoured(api: Api, receiver: Receiver):
    callback_id, _ = await setup_callback(api, receiver)
    receiver.mode, receiver.retry_after = "rate", "2"
    await post_event(api)
    [first] = await receiver.wait_for(1)
    receiver.mode = "ok"
    [_, second] = await receiver.wait_for(2)
    assert second.at - first.at >= 1.9


async def test_callback_turns_failing_after_consecutive_failures_and_a_success_restores_it(
    database, settings, aiohttp_client, receiver: Receiver
):
    s = settings.model_copy(update={"failing_after": 2, "retry_schedule": [0.1] * 20})
    api = Api(await aiohttp_client(create_app(s, database=database)), await make_key(database, "acme"))
    callback_id, _ = await setup_callback(api, receiver)
    receiver.mode = "fail"
    await post_event(api)

    async def status_is(value):
        _, cb = await api.get(f"/v1/callbacks/{callback_id}")
        return cb["status"] == value

    await wait_until(lambda: status_is("failing"))
    receiver.mode = "ok"
    await wait_until(lambda: status_is("active"))


async def test_callback_failing_for_the_whole_disable_period_is_disabled_with_an_operational_event(
    database, settings, aiohttp_client, receiver: Receiver
):
    s = settings.model_copy(update={"failing_after": 1, "disable_after": 0.5, "retry_schedule": [0.1] * 50})
    api = Api(await aiohttp_client(create_app(s, database=database)), await make_key(database, "acme"))
    watcher = await Receiver().start()
    try:
        _, watcher_secret = await setup_callback(api, watcher, name="ops", event_types=["callback.disabled"])
        callback_id, _ = await setup_callback(api, receiver, name="flaky", event_types=["sent"])
        receiver.mode = "fail"
        await post_event(api)
        [req] = await watcher.wait_for(1)
        payload = req.verify(watcher_secret)
        assert payload["type"] == "callback.disabled"
        assert payload["data"]["callbackId"] == callback_id
        _, cb = await api.get(f"/v1/callbacks/{callback_id}")
        assert cb["status"] == "disabled"
    finally:
        await watcher.stop()


async def test_a_slow_callback_does_not_slow_a_healthy_one(api: Api, receiver: Receiver):
    slow = await Receiver(mode="slow", slow_seconds=1.5).start()
    try:
        await setup_callback(api, slow, name="slow", event_types=["sent"])
        await setup_callback(api, receiver, name="fast", event_types=["sent"])
        started = time.time()
        await api.post("/v1/events", {"events": [{"type": "sent", "messageKey": f"m{i}"} for i in range(40)]})
        await receiver.wait_for(40)
        # 40 events at 10 in flight per callback take the slow one at least 4 rounds of 1.5 s
        assert len(slow.events) <= 20
        assert receiver.events[-1].at - started < (len(slow.events) and 6.0)
    finally:
        await slow.stop()


# --- tenancy --------------------------------------------------------------------------------------


async def test_another_account_cannot_see_or_touch_callbacks_subscriptions_or_deliveries(
    api: Api, other_api: Api, receiver: Receiver
):
    callback_id, _ = await setup_callback(api, receiver)
    await post_event(api)
    await receiver.wait_for(1)
    [delivery] = await wait_until(lambda: deliveries_of(api, callback_id, status="succeeded"))
    _, subs = await api.get("/v1/subscriptions")
    sub_id = subs["subscriptions"][0]["subscriptionId"]
    assert (await other_api.get("/v1/callbacks"))[1]["callbacks"] == []
    assert (await other_api.get("/v1/subscriptions"))[1]["subscriptions"] == []
    for method, path, body in [
        ("GET", f"/v1/callbacks/{callback_id}", None),
        ("PATCH", f"/v1/callbacks/{callback_id}", {"name": "mine"}),
        ("DELETE", f"/v1/callbacks/{callback_id}", None),
        ("POST", f"/v1/callbacks/{callback_id}/rotate-secret", None),
        ("GET", f"/v1/callbacks/{callback_id}/deliveries", None),
        ("GET", f"/v1/callbacks/{callback_id}/attempts", None),
        ("GET", f"/v1/subscriptions/{sub_id}", None),
        ("DELETE", f"/v1/subscriptions/{sub_id}", None),
        ("GET", f"/v1/deliveries/{delivery['deliveryId']}", None),
        ("POST", f"/v1/deliveries/{delivery['deliveryId']}/retry", None),
    ]:
        status, _ = await other_api.call(method, path, body)
        assert status == 404, (method, path)
    status, _ = await other_api.post(
        "/v1/subscriptions", {"name": "steal", "callbackId": callback_id, "eventTypes": ["*"]}
    )
    assert status == 404
    assert (await api.get(f"/v1/callbacks/{callback_id}"))[0] == 200


async def test_callback_and_subscription_crud(api: Api, receiver: Receiver):
    callback_id, _ = await setup_callback(api, receiver)
    status, body = await api.patch(f"/v1/callbacks/{callback_id}", {"description": "orders", "maxBatchSize": 50})
    assert status == 200 and body["description"] == "orders" and body["maxBatchSize"] == 50
    assert (await api.post("/v1/callbacks", {"name": "hook", "url": receiver.url}))[0] == 409
    _, subs = await api.get("/v1/subscriptions")
    sub = subs["subscriptions"][0]
    status, body = await api.patch(f"/v1/subscriptions/{sub['subscriptionId']}", {"eventTypes": ["opened"]})
    assert status == 200 and body["eventTypes"] == ["opened"]
    dup = {"name": sub["name"], "callbackId": callback_id, "eventTypes": ["*"]}
    assert (await api.post("/v1/subscriptions", dup))[0] == 409
    bad = {"name": "x", "callbackId": callback_id, "eventTypes": ["nope"]}
    assert (await api.post("/v1/subscriptions", bad))[0] == 400
    assert (await api.delete(f"/v1/subscriptions/{sub['subscriptionId']}"))[0] == 204
    assert (await api.delete(f"/v1/callbacks/{callback_id}"))[0] == 204
    assert (await api.get(f"/v1/callbacks/{callback_id}"))[0] == 404


async def test_a_delivery_the_worker_cannot_sign_is_a_failed_attempt_not_stranded_on_its_lease(
    receiver: Receiver, database, settings, aiohttp_client
):
    """Were the task to fail silently, the delivery would wait out its whole lease (minutes); handed
    back without an attempt, it would loop. It is recorded as a failed attempt and retried."""
    patient = settings.model_copy(update={"retry_schedule": [1.0, 60.0]})
    client = await aiohttp_client(create_app(patient, database=database))
    api = Api(client, await make_key(database, "acme"))
    await setup_callback(api, receiver)
    saved = await database.pool.fetch("SELECT id, secret_enc FROM callback_secrets")
    await database.pool.execute("UPDATE callback_secrets SET secret_enc = 'not a fernet token'")
    await post_event(api, "unsignable")

    async def failed_attempt() -> bool:
        return bool(await database.pool.fetchval("SELECT count(*) FROM attempts WHERE error_kind = 'internal_error'"))

    await wait_until(failed_attempt, timeout=15)
    for row in saved:
        await database.pool.execute("UPDATE callback_secrets SET secret_enc = $2 WHERE id = $1", *row)
    [event] = await receiver.wait_for(1, timeout=15)  # the next retry goes out
    assert event.json["data"]["messageKey"] == "unsignable"


async def test_retrying_a_delivery_while_it_is_being_sent_does_not_send_it_twice_at_once(
    api: Api, receiver: Receiver, database
):
    await setup_callback(api, receiver)
    receiver.hold = asyncio.Event()
    receiver.hold_when = lambda req: req.json.get("data", {}).get("messageKey") == "m-1"
    assert (await api.post("/v1/events", {"type": "sent", "messageKey": "m-1"}))[0] == 201
    await receiver.wait_for(1)
    delivery_id = await database.pool.fetchval("SELECT id FROM queue")
    assert (await api.post(f"/v1/deliveries/dlv_{delivery_id}/retry"))[0] == 202
    assert await database.pool.fetchval("SELECT lease_owner IS NOT NULL FROM queue") is True  # still its sender's
    receiver.hold.set()
    assert (await api.post("/v1/events", {"type": "sent", "messageKey": "marker"}))[0] == 201
    await wait_until(lambda: _true([r.json["data"]["messageKey"] for r in receiver.events][-1:] == ["marker"]))
    assert [r.json["data"]["messageKey"] for r in receiver.events] == ["m-1", "marker"]


async def _true(value: bool) -> bool:
    return value
