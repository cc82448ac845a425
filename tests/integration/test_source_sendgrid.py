"""SendGrid's signed Event Webhook into a source: ECDSA P-256 keys made here, events shaped as SendGrid's
documentation shows them, each refusal storing nothing."""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import Api, setup_callback
from tests.integration.sources import event_count, source_post


def keypair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(der).decode()


def signed(private: ec.EllipticCurvePrivateKey, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = private.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": ts,
        "Content-Type": "application/json",
    }


def sendgrid_events(key: str = "order-1") -> list[dict[str, Any]]:
    base = {
        "email": "ann@example.com",
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "messageKey": key,
    }
    now = int(time.time())
    return [
        {**base, "event": "processed", "timestamp": now - 5, "sg_event_id": "sg-processed-1"},
        {**base, "event": "delivered", "timestamp": now - 4, "sg_event_id": "sg-delivered-1", "response": "250 OK"},
        {
            **base,
            "event": "open",
            "timestamp": now - 3,
            "sg_event_id": "sg-open-1",
            "useragent": "Mozilla/5.0",
            "ip": "203.0.113.7",
        },
        {
            **base,
            "event": "click",
            "timestamp": now - 2,
            "sg_event_id": "sg-click-1",
            "url": "https://example.com/pricing",
            "useragent": "Mozilla/5.0",
            "ip": "203.0.113.7",
        },
        {
            **base,
            "event": "bounce",
            "type": "bounce",
            "timestamp": now - 1,
            "sg_event_id": "sg-bounce-1",
            "status": "5.1.1",
            "reason": "550 5.1.1 The email account that you tried to reach does not exist",
            "bounce_classification": "Invalid Address",
        },
        {**base, "event": "group_resubscribe", "timestamp": now, "sg_event_id": "sg-resub-1", "asm_group_id": 10},
    ]


@pytest.fixture
async def source(api: Api) -> tuple[dict[str, Any], ec.EllipticCurvePrivateKey]:
    private, public = keypair()
    status, body = await api.post(
        "/v1/sources", {"name": "sg", "provider": "sendgrid", "config": {"publicKey": public}}
    )
    assert status == 201, body
    return body, private


async def test_signed_sendgrid_events_land_in_the_message_timeline_under_the_messagekey_custom_arg(api, source):
    src, private = source
    body = orjson.dumps(sendgrid_events())
    status, answer = await source_post(api, src, body, signed(private, body))
    assert status == 200, answer
    assert answer == {"received": 6, "recorded": 5, "duplicates": 0, "ignored": 1}
    status, msg = await api.get("/v1/messages/order-1")
    assert status == 200, msg
    assert [e["type"] for e in msg["events"]] == ["sent", "delivered", "opened", "clicked", "bounced"]
    bounced = msg["events"][-1]
    assert bounced["data"]["bounceType"] == "hard" and bounced["data"]["smtpCode"] == 550
    assert bounced["data"]["provider"] == {
        "name": "sendgrid",
        "sourceId": src["sourceId"],
        "eventId": "sg-bounce-1",
        "messageId": "14c5d75ce93",
        "rawType": "bounce",
        "classification": "Invalid Address",
        "smtpMessageId": "14c5d75ce93.dfd.64b469@ismtpd-555",
    }
    assert bounced["recipient"] == "ann@example.com"
    assert msg["events"][3]["data"]["url"] == "https://example.com/pricing"


async def test_a_retried_sendgrid_batch_is_recorded_once(api, source, database):
    src, private = source
    body = orjson.dumps(sendgrid_events())
    assert (await source_post(api, src, body, signed(private, body)))[0] == 200
    status, answer = await source_post(api, src, body, signed(private, body))
    assert status == 200 and answer["recorded"] == 0 and answer["duplicates"] == 5, answer
    assert await event_count(database) == 5


@pytest.mark.parametrize("case", ["bad_signature", "wrong_key", "stale", "missing"])
async def test_an_unauthentic_sendgrid_request_is_refused_and_nothing_is_stored(api, source, database, case):
    src, private = source
    body = orjson.dumps(sendgrid_events())
    headers = signed(private, body)
    if case == "bad_signature":
        headers = signed(private, body.replace(b"order-1", b"order-2"))
    elif case == "wrong_key":
        headers = signed(keypair()[0], body)
    elif case == "stale":
        headers = signed(private, body, timestamp=int(time.time()) - 3600)
    elif case == "missing":
        headers = {"Content-Type": "application/json"}
    status, answer = await source_post(api, src, body, headers)
    assert status == 401 and answer["error"]["code"] == "unauthorized", answer
    assert await event_count(database) == 0


async def test_a_provider_event_reaches_a_subscribed_callback_signed(api, source, receiver):
    src, private = source
    await setup_callback(api, receiver, event_types=["bounced"])
    body = orjson.dumps(sendgrid_events("order-9"))
    assert (await source_post(api, src, body, signed(private, body)))[0] == 200
    [request] = await receiver.wait_for(1)
    assert request.json["type"] == "bounced" and request.json["data"]["messageKey"] == "order-9"
    assert request.json["data"]["provider"]["name"] == "sendgrid"
    assert request.headers["webhook-signature"].startswith("v1,")


async def test_the_raw_provider_event_is_kept_for_audit_beside_the_event(api, source, other_api):
    src, private = source
    events = sendgrid_events()
    body = orjson.dumps(events)
    assert (await source_post(api, src, body, signed(private, body)))[0] == 200
    _, msg = await api.get("/v1/messages/order-1")
    bounced = msg["events"][-1]
    status, receipt = await api.get(f"/v1/events/{bounced['eventId']}/provider-event")
    assert status == 200, receipt
    assert receipt["raw"] == events[4] and receipt["sourceId"] == src["sourceId"]
    assert (await other_api.get(f"/v1/events/{bounced['eventId']}/provider-event"))[0] == 404
