"""A callback's format decides its requests' bodies and signatures: Standard Webhooks by default, Marketing
Cloud ENS arrays signed with x-sfmc-ens-signature, or Customer.io reporting webhooks signed with
X-CIO-Signature. Each is verified here the way that system's own receivers verify it."""

from __future__ import annotations

import base64
import hashlib
import hmac

from tests.conftest import Api, setup_callback


async def test_an_ens_callback_receives_an_ens_array_signed_with_its_signature_key(api: Api, receiver):
    cid, secret = await setup_callback(api, receiver, event_types=["bounced", "clicked"])
    status, cb = await api.patch(f"/v1/callbacks/{cid}", {"format": "ens"})
    assert status == 200 and cb["format"] == "ens", cb
    await api.post("/v1/events", {"type": "bounced", "messageKey": "m-1", "recipient": "ann@example.com",
                                  "definitionKey": "receipt",
                                  "data": {"bounceType": "hard", "smtpCode": 550, "reason": "550 5.1.1 no such user"}})  # fmt: skip
    [request] = await receiver.wait_for(1)
    key = secret.removeprefix("whsec_").encode()
    expected = base64.b64encode(hmac.digest(key, request.body, "sha256")).decode()
    assert request.headers["x-sfmc-ens-signature"] == expected
    [event] = request.json
    assert event["eventCategoryType"] == "TransactionalSendEvents.EmailBounced"
    assert event["definitionKey"] == "receipt" and isinstance(event["timestampUTC"], int)
    assert event["info"] == {"messageKey": "m-1", "to": "ann@example.com", "bounceCode": "HARD",
                             "bounceMessage": "550 5.1.1 no such user", "smtpReason": "550 5.1.1 no such user",
                             "smtpCode": 550}  # fmt: skip


async def test_a_customerio_callback_receives_a_reporting_webhook_signed_as_customerio_signs(api: Api, receiver):
    status, created = await api.post("/v1/callbacks", {"name": "cio", "url": receiver.url, "format": "customerio"})
    assert status == 201 and created["format"] == "customerio", created
    [verification] = await receiver.wait_for(1, events_only=False)
    key = verification.json["verificationKey"]
    assert (await api.post(f"/v1/callbacks/{created['callbackId']}/verify", {"verificationKey": key}))[0] == 200
    await api.post("/v1/subscriptions", {"name": "all", "callbackId": created["callbackId"], "eventTypes": ["*"]})
    await api.post("/v1/events", {"type": "clicked", "messageKey": "m-2", "recipient": "bob@example.com",
                                  "data": {"url": "https://example.com/x"}})  # fmt: skip
    [request] = await receiver.wait_for(1)
    timestamp = request.headers["x-cio-timestamp"]
    signed = f"v0:{timestamp}:".encode() + request.body
    expected = hmac.new(created["signingSecret"].encode(), signed, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-cio-signature"], expected)
    body = request.json
    assert body["object_type"] == "email" and body["metric"] == "clicked"
    assert body["data"]["delivery_id"] == "m-2" and body["data"]["recipient"] == "bob@example.com"
    assert body["data"]["href"] == "https://example.com/x"


async def test_an_unknown_format_is_refused_naming_the_field(api: Api, receiver):
    status, body = await api.post("/v1/callbacks", {"name": "x", "url": receiver.url, "format": "xml"})
    assert status == 400 and body["error"]["field"] == "format", body
