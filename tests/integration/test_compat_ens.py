"""Marketing Cloud's Event Notification Service API: callbacks registered and verified the ENS way (arrays in
and out, a URL that must answer the verification POST with 200 before the callback exists), subscriptions by
ENS event category with `name=value` filters, paused subscriptions, and events delivered as ENS arrays signed
with x-sfmc-ens-signature, checked here the way an ENS receiver checks them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
from typing import Any

import pytest

from dispatcher.settings import Settings
from tests.conftest import Api

ENS = "/platform/v1"
SENT, BOUNCED, CLICK = (
    "TransactionalSendEvents.EmailSent",
    "TransactionalSendEvents.EmailBounced",
    "EngagementEvents.EmailClick",
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # ENS waits 30 s for the verification answer; the tests wait 1 s.
    return settings.model_copy(update={"verification_timeout": 1.0})


def ens_signature(signature_key: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(signature_key.encode(), body, hashlib.sha256).digest()).decode()


def assert_marketing_cloud_error(body: Any) -> None:
    assert set(body) == {"message", "errorcode", "documentation"}, body
    assert isinstance(body["errorcode"], int) and body["message"], body


async def create_callback(api: Api, receiver: Any, name: str = "ens-hook", batch: int = 1000) -> dict[str, Any]:
    """Register and verify an ENS callback as an ENS client does: the key the URL received goes to ens-verify."""
    before = len(receiver.requests)
    status, created = await api.post(f"{ENS}/ens-callbacks", [{"callbackName": name, "url": receiver.url,
                                                               "maxBatchSize": batch}])  # fmt: skip
    assert status == 201, created
    [callback] = created
    handshake = receiver.requests[before].json  # answered 200 before the create request answered
    assert handshake["callbackId"] == callback["callbackId"]
    status, verified = await api.post(f"{ENS}/ens-verify", handshake)
    assert status == 200 and verified["status"] == "verified", verified
    return dict(callback)


async def subscribe(api: Api, callback_id: str, categories: list[str], filters: list[str] | None = None,
                    name: str = "sub") -> dict[str, Any]:  # fmt: skip
    item: dict[str, Any] = {"subscriptionName": name, "callbackId": callback_id, "eventCategoryTypes": categories}
    if filters is not None:
        item["filters"] = filters
    status, created = await api.post(f"{ENS}/ens-subscriptions", [item])
    assert status == 201, created
    [subscription] = created
    return dict(subscription)


async def deliveries(api: Api, callback_id: str) -> list[Any]:
    status, page = await api.get(f"/v1/callbacks/{callback_id}/deliveries")
    assert status == 200, page
    return list(page["deliveries"])


async def test_creating_callbacks_takes_and_answers_an_array_with_a_signature_key(api: Api, receiver) -> None:
    status, created = await api.post(f"{ENS}/ens-callbacks", [{"callbackName": "cb1", "url": receiver.url,
                                                               "maxBatchSize": 500}])  # fmt: skip
    assert status == 201, created
    [callback] = created
    assert set(callback) == {"callbackId", "callbackName", "url", "maxBatchSize", "signatureKey"}
    assert (callback["callbackName"], callback["url"], callback["maxBatchSize"]) == ("cb1", receiver.url, 500)
    [probe] = receiver.requests  # the verification POST was made, and answered, before the 201
    assert set(probe.json) == {"callbackId", "verificationKey"} and probe.json["callbackId"] == callback["callbackId"]

    status, listed = await api.get(f"{ENS}/ens-callbacks")
    assert status == 200 and [c["callbackId"] for c in listed] == [callback["callbackId"]], listed
    assert listed[0]["status"] == "unverified"
    status, native = await api.get(f"/v1/callbacks/{callback['callbackId']}")
    assert status == 200 and native["format"] == "ens", native


async def test_callbacks_default_to_a_batch_of_1000_and_are_renamed_with_put(api: Api, receiver) -> None:
    status, [created] = await api.post(f"{ENS}/ens-callbacks", [{"callbackName": "cb", "url": receiver.url}])
    assert status == 201 and created["maxBatchSize"] == 1000, created
    status, updated = await api.call("PUT", f"{ENS}/ens-callbacks", [{"callbackId": created["callbackId"],
                                                                      "callbackName": "renamed", "maxBatchSize": 100}])  # fmt: skip
    assert status == 200 and updated[0]["callbackName"] == "renamed" and updated[0]["maxBatchSize"] == 100, updated
    status, got = await api.get(f"{ENS}/ens-callbacks/{created['callbackId']}")
    assert status == 200 and (got["callbackName"], got["maxBatchSize"]) == ("renamed", 100), got


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


@pytest.mark.parametrize("mode", ["fail", "slow", "closed"])
async def test_a_url_that_does_not_answer_the_verification_with_200_is_refused_and_not_kept(
    api: Api, receiver, mode: str
) -> None:
    receiver.mode, receiver.slow_seconds = mode, 3.0  # slow: beyond the verification timeout
    url = closed_port_url() if mode == "closed" else receiver.url
    status, body = await api.post(f"{ENS}/ens-callbacks", [{"callbackName": "cb", "url": url}])
    assert status == 400, body
    assert_marketing_cloud_error(body)
    assert "Could not verify callback url" in body["message"], body
    assert (await api.get(f"{ENS}/ens-callbacks"))[1] == []
    assert (await api.get("/v1/callbacks"))[1]["callbacks"] == []
    # the name is free again: once the URL answers, the same request succeeds
    receiver.mode = "ok"
    status, created = await api.post(f"{ENS}/ens-callbacks", [{"callbackName": "cb", "url": receiver.url}])
    assert status == 201, created


async def test_verify_takes_the_verification_payload_and_refuses_a_wrong_key_with_404(api: Api, receiver) -> None:
    status, [created] = await api.post(f"{ENS}/ens-callbacks", [{"callbackName": "cb", "url": receiver.url}])
    assert status == 201
    status, body = await api.post(f"{ENS}/ens-verify", {"callbackId": created["callbackId"], "verificationKey": "no"})
    assert status == 404, body
    assert_marketing_cloud_error(body)
    status, body = await api.post(f"{ENS}/ens-verify", receiver.requests[0].json)
    assert status == 200 and body["status"] == "verified", body
    assert (await api.get(f"{ENS}/ens-callbacks/{created['callbackId']}"))[1]["status"] == "verified"


async def test_an_unverified_callback_cannot_be_subscribed(api: Api, receiver) -> None:
    status, [created] = await api.post(f"{ENS}/ens-callbacks", [{"callbackName": "cb", "url": receiver.url}])
    assert status == 201
    status, body = await api.post(f"{ENS}/ens-subscriptions", [{"subscriptionName": "s", "eventCategoryTypes": [SENT],
                                                                "callbackId": created["callbackId"]}])  # fmt: skip
    assert status == 400, body
    assert_marketing_cloud_error(body)


async def test_a_definition_key_filter_delivers_only_that_definitions_events(api: Api, receiver) -> None:
    cb = await create_callback(api, receiver)
    sub = await subscribe(api, cb["callbackId"], [SENT], ["definitionKey=receipt"])
    assert sub["filters"] == ["definitionKey=receipt"] and sub["status"] == "active", sub
    await api.post("/v1/events", {"type": "sent", "messageKey": "other-1", "definitionKey": "welcome"})
    await api.post("/v1/events", {"type": "sent", "messageKey": "marker", "definitionKey": "receipt"})
    [request] = await receiver.wait_for(1)
    assert [e["info"]["messageKey"] for e in request.json] == ["marker"]
    # fan-out happens when an event is recorded: the other definition's event has no delivery at all
    assert len(await deliveries(api, cb["callbackId"])) == 1


async def test_a_paused_subscription_drops_events_and_resumes_with_new_ones(api: Api, receiver) -> None:
    cb = await create_callback(api, receiver)
    sub = await subscribe(api, cb["callbackId"], [SENT])
    put = {"subscriptionId": sub["subscriptionId"], "eventCategoryTypes": [SENT], "status": "paused",
           "statusReason": "maintenance"}  # fmt: skip
    status, [paused] = await api.call("PUT", f"{ENS}/ens-subscriptions", [put])
    assert status == 200 and paused["status"] == "paused", paused
    await api.post("/v1/events", {"type": "sent", "messageKey": "while-paused"})
    status, [active] = await api.call("PUT", f"{ENS}/ens-subscriptions", [put | {"status": "active"}])
    assert status == 200 and active["status"] == "active", active
    await api.post("/v1/events", {"type": "sent", "messageKey": "marker"})
    [request] = await receiver.wait_for(1)
    assert [e["info"]["messageKey"] for e in request.json] == ["marker"]
    assert len(await deliveries(api, cb["callbackId"])) == 1


async def test_bounce_and_click_events_arrive_ens_formatted_and_signed_with_the_signature_key(
    api: Api, receiver
) -> None:
    cb = await create_callback(api, receiver, batch=1000)
    await subscribe(api, cb["callbackId"], [BOUNCED, CLICK])
    await api.post("/v1/events", {"type": "bounced", "messageKey": "m-1", "recipient": "ann@example.com",
                                  "definitionKey": "receipt",
                                  "data": {"bounceType": "hard", "smtpCode": 550, "reason": "550 5.1.1 no such user"}})  # fmt: skip
    await api.post("/v1/events", {"type": "clicked", "messageKey": "m-1", "recipient": "ann@example.com",
                                  "definitionKey": "receipt",
                                  "data": {"url": "https://example.com/x", "userAgent": "Mail/1.0",
                                           "ipAddress": "192.0.2.7"}})  # fmt: skip
    requests = await receiver.wait_for(1)
    events = [e for r in requests for e in r.json]
    while len(events) < 2:
        requests = await receiver.wait_for(len(requests) + 1)
        events = [e for r in requests for e in r.json]
    for r in requests:
        assert r.headers["x-sfmc-ens-signature"] == ens_signature(cb["signatureKey"], r.body)
        assert isinstance(r.json, list) and r.json
    bounce, click = sorted(events, key=lambda e: e["eventCategoryType"] != BOUNCED)
    assert bounce["eventCategoryType"] == BOUNCED and click["eventCategoryType"] == CLICK
    for event in (bounce, click):
        assert event["definitionKey"] == "receipt" and isinstance(event["timestampUTC"], int)
        assert isinstance(event["mid"], int) and event["eid"] == event["mid"] and isinstance(event["compositeId"], str)
    assert bounce["info"]["bounceCode"] == "HARD" and bounce["info"]["smtpReason"] == "550 5.1.1 no such user"
    assert bounce["info"]["messageKey"] == "m-1" and bounce["info"]["to"] == "ann@example.com"
    info = click["info"]
    assert info["messageKey"] == "m-1" and info["location"] == {}
    assert (info["contentLink"], info["userAgent"], info["ipAddress"]) == ("https://example.com/x", "Mail/1.0",
                                                                            "192.0.2.7")  # fmt: skip


async def test_subscriptions_are_listed_by_callback_read_updated_and_deleted(api: Api, receiver) -> None:
    cb = await create_callback(api, receiver)
    sub = await subscribe(api, cb["callbackId"], [SENT], ["definitionKey=receipt"])
    status, listed = await api.get(f"{ENS}/ens-subscriptions-by-cb/{cb['callbackId']}")
    assert status == 200 and [s["subscriptionId"] for s in listed] == [sub["subscriptionId"]], listed
    assert listed[0]["callbackName"] == "ens-hook" and listed[0]["eventCategoryTypes"] == [SENT]
    put = {"subscriptionId": sub["subscriptionId"], "eventCategoryTypes": [BOUNCED],
           "filters": ["bounceCode=HARD"], "subscriptionName": "bounces"}  # fmt: skip
    status, [updated] = await api.call("PUT", f"{ENS}/ens-subscriptions", [put])
    assert status == 200, updated
    assert (updated["eventCategoryTypes"], updated["filters"], updated["subscriptionName"]) == (
        [BOUNCED], ["bounceCode=HARD"], "bounces")  # fmt: skip
    status, got = await api.get(f"{ENS}/ens-subscriptions/{sub['subscriptionId']}")
    assert status == 200 and got == updated, got
    # a callback in use by a subscription is not deleted
    status, body = await api.delete(f"{ENS}/ens-callbacks/{cb['callbackId']}")
    assert status == 409, body
    assert_marketing_cloud_error(body)
    assert (await api.delete(f"{ENS}/ens-subscriptions/{sub['subscriptionId']}"))[0] == 200
    assert (await api.get(f"{ENS}/ens-subscriptions/{sub['subscriptionId']}"))[0] == 404
    assert (await api.delete(f"{ENS}/ens-callbacks/{cb['callbackId']}"))[0] == 200
    assert (await api.get(f"{ENS}/ens-callbacks"))[1] == []


async def test_refusals_come_back_in_marketing_cloud_error_shape(api: Api, receiver) -> None:
    status, body = await api.post(f"{ENS}/ens-callbacks", {"callbackName": "not an array", "url": receiver.url})
    assert status == 400, body
    assert_marketing_cloud_error(body)
    status, body = await api.post(f"{ENS}/ens-callbacks", [{"url": receiver.url}])
    assert status == 400 and body["errorcode"] == 10002 and "callbackName" in body["message"], body
    status, body = await api.get(f"{ENS}/ens-callbacks", key="not-a-key")
    assert status == 401 and body["errorcode"] == 0, body
    assert_marketing_cloud_error(body)
    cb = await create_callback(api, receiver)
    status, body = await api.post(f"{ENS}/ens-subscriptions", [{"subscriptionName": "s", "callbackId": cb["callbackId"],
                                                                "eventCategoryTypes": [SENT],
                                                                "filters": ["colour=red"]}])  # fmt: skip
    assert status == 400 and "filters" in body["message"], body
    assert_marketing_cloud_error(body)


# --- the whole Marketing Cloud flow, through the pysfmc client ----------------------------------


@pytest.fixture
async def marketing_cloud(database, settings, aiohttp_client, smtp) -> Any:
    """The service on a known port (its token answers rest_instance_url there), mailing the test SMTP server;
    pysfmc's settings for a key with the send and callback scopes."""
    from dispatcher import accounts
    from dispatcher.runtime import create_app
    from tests.integration.test_compat_marketingcloud import DispatcherSettings
    from tests.integration.test_smtp_transport import free_port

    _, smtp_port = smtp
    port = free_port()
    s = settings.model_copy(update={"mail_url": f"smtp://127.0.0.1:{smtp_port}?timeout=5",
                                    "public_url": f"http://127.0.0.1:{port}"})  # fmt: skip
    await aiohttp_client(create_app(s, database=database), server_kwargs={"port": port})
    async with database.pool.acquire() as conn:
        account = await accounts.create_account(conn, "acme")
        _, key = await accounts.create_key(conn, account["id"], ["messages:send", "callbacks:manage"])
    return DispatcherSettings(client_id=key[:10], client_secret=key, account_id=str(account["id"]), subdomain="unused",
                              base_url=f"http://127.0.0.1:{port}")  # fmt: skip


async def test_pysfmc_creates_a_definition_and_an_ens_callback_subscribes_sends_and_gets_signed_ens_events(
    marketing_cloud, receiver, smtp
) -> None:
    pysfmc = pytest.importorskip("pysfmc")
    from tests.conftest import wait_until
    from tests.integration.test_compat_marketingcloud import SENDER, VIEWS
    from tests.integration.test_send_api import received

    async with pysfmc.AsyncSFMCClient(settings=marketing_cloud) as client:  # 1. its first request gets a token
        await client.assets.content.create_asset(  # 2. an asset, a definition, a callback
            name="Receipt", asset_type_name="htmlemail", asset_type_id=208, customer_key="receipt-email", views=VIEWS
        )
        await client.post("/messaging/v1/email/definitions", json={
            "definitionKey": "receipt", "name": "Receipt", "classification": SENDER,
            "content": {"customerKey": "receipt-email"}, "subscriptions": {"list": "All Subscribers"},
        })  # fmt: skip
        [callback] = await client.post(f"{ENS}/ens-callbacks", json=[{"callbackName": "cb", "url": receiver.url}])
        verified = await client.post(f"{ENS}/ens-verify", json=receiver.requests[0].json)  # 3. verify
        assert verified["status"] == "verified", verified
        [sub] = await client.post(f"{ENS}/ens-subscriptions", json=[{  # 4. subscribe
            "subscriptionName": "receipts", "callbackId": callback["callbackId"],
            "eventCategoryTypes": [SENT, "TransactionalSendEvents.EmailNotSent"], "filters": ["definitionKey=receipt"],
        }])  # fmt: skip
        assert sub["status"] == "active", sub
        sent = await client.post("/messaging/v1/email/messages/order-1", json={  # 5. send
            "definitionKey": "receipt",
            "recipient": {"contactKey": "c-42", "to": "ann@example.com", "attributes": {"FirstName": "Ann", "order": "A1"}},
        })  # fmt: skip
        assert sent["errorcode"] == 0, sent

        async def is_sent() -> bool:  # 6. read the status
            status = await client.get("/messaging/v1/email/messages/order-1")
            return bool(status["eventCategoryType"] == SENT)

        await wait_until(is_sent)
    [request] = await receiver.wait_for(1)
    assert request.headers["x-sfmc-ens-signature"] == ens_signature(callback["signatureKey"], request.body)
    [event] = request.json
    assert (event["eventCategoryType"], event["definitionKey"]) == (SENT, "receipt"), event
    assert event["info"]["messageKey"] == "order-1" and event["info"]["to"] == "ann@example.com", event
    assert event["info"]["subscriberKey"] == "c-42", event
    [mail] = received(smtp)
    assert mail["Subject"] == "Your order A1"
