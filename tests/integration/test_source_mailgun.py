"""Mailgun's webhooks into a source: events shaped as Mailgun's documentation shows them, signed in the
body with an HMAC of timestamp + token under a signing key made here; each refusal stores nothing, and a
token is good once."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import orjson
import pytest

from tests.conftest import Api, setup_callback, wait_until
from tests.integration.sources import event_count, source_post
from tests.integration.test_source_relay import relay_api, send_and_relay, types_of

MESSAGE_ID = "20240812211713.1.DF5966851B4BAA99@mg.example.com"


def sign(key: str, timestamp: int | None = None, token: str | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    token = token or secrets.token_hex(25)
    signature = hmac.new(key.encode(), f"{ts}{token}".encode(), hashlib.sha256).hexdigest()
    return {"timestamp": ts, "token": token, "signature": signature}


def webhook(event_data: dict[str, Any], key: str, **signing: Any) -> bytes:
    return orjson.dumps({"signature": sign(key, **signing), "event-data": event_data})


def event(kind: str, key: str | None = "order-1", event_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """An event-data object as Mailgun's webhook documentation shows it."""
    return {
        "id": event_id or secrets.token_urlsafe(16),
        "event": kind,
        "timestamp": time.time() - 2,
        "log-level": "info",
        "recipient": "ann@example.com",
        "recipient-domain": "example.com",
        "tags": [],
        "user-variables": {"messageKey": key} if key else {},
        "envelope": {"sender": "shop@mg.example.com", "transport": "smtp", "targets": "ann@example.com"},
        "message": {
            "headers": {
                "to": "ann@example.com",
                "message-id": MESSAGE_ID,
                "from": "shop@mg.example.com",
                "subject": "Receipt",
            },
            "attachments": [],
            "size": 809,
        },
        "flags": {"is-authenticated": True, "is-test-mode": False},
        **fields,
    }


def bounce_status() -> dict[str, Any]:
    return {"tls": True, "mx-host": "mx.example.com", "attempt-no": 1, "description": "", "code": 550,
            "message": "5.1.1 The email account that you tried to reach does not exist"}  # fmt: skip


def delivered() -> dict[str, Any]:
    return event("delivered", **{"delivery-status": {"tls": True, "mx-host": "mx.example.com", "attempt-no": 1,
                                                     "description": "", "code": 250, "message": "OK"}})  # fmt: skip


@pytest.fixture
def signing_key() -> str:
    return secrets.token_hex(16)


@pytest.fixture
async def source(api: Api, signing_key: str) -> dict[str, Any]:
    status, body = await api.post(
        "/v1/sources", {"name": "mg", "provider": "mailgun", "config": {"signingKey": signing_key}}
    )
    assert status == 201, body
    return body


async def post(api: Api, source: dict[str, Any], body: bytes) -> tuple[int, Any]:
    return await source_post(api, source, body, {"Content-Type": "application/json"})


async def test_the_signing_key_is_a_secret_never_shown(api, source):
    assert source["config"] == {} and source["secretsSet"] == ["signingKey"]
    status, again = await api.get(f"/v1/sources/{source['sourceId']}")
    assert status == 200 and again["config"] == {} and again["secretsSet"] == ["signingKey"]


async def test_signed_mailgun_events_land_in_the_message_timeline_under_the_messagekey_user_variable(
    api, source, signing_key
):
    now = time.time()
    accepted, delivery = event("accepted", timestamp=now - 3), delivered()
    delivery["timestamp"] = now - 2
    permanent = event("failed", severity="permanent", reason="bounce", timestamp=now - 1,
                      **{"delivery-status": bounce_status()})  # fmt: skip
    for raw in (accepted, delivery, permanent):
        status, answer = await post(api, source, webhook(raw, signing_key))
        assert status == 200 and answer == {"received": 1, "recorded": 1, "duplicates": 0, "ignored": 0}, answer
    status, msg = await api.get("/v1/messages/order-1")
    assert status == 200, msg
    assert [e["type"] for e in msg["events"]] == ["sent", "delivered", "bounced"]
    bounced = msg["events"][-1]
    assert bounced["recipient"] == "ann@example.com"
    assert bounced["data"]["bounceType"] == "hard" and bounced["data"]["smtpCode"] == 550
    assert bounced["data"]["status"] == "5.1.1"
    assert bounced["data"]["reason"].startswith("5.1.1 The email account")
    day = time.strftime("%Y-%m-%d", time.gmtime(permanent["timestamp"]))
    assert bounced["data"]["provider"] == {
        "name": "mailgun",
        "sourceId": source["sourceId"],
        "eventId": f"{day}/{permanent['id']}",
        "messageId": MESSAGE_ID,
        "rawType": "failed",
        "classification": "permanent/bounce",
        "smtpMessageId": MESSAGE_ID,
    }


async def test_a_mailgun_event_reaches_a_subscribed_callback(api, source, signing_key, receiver):
    await setup_callback(api, receiver, event_types=["clicked"])
    click = event("clicked", key="order-9", url="https://example.com/pricing", ip="203.0.113.7",
                  **{"client-info": {"client-type": "browser", "user-agent": "Mozilla/5.0"}})  # fmt: skip
    assert (await post(api, source, webhook(click, signing_key)))[0] == 200
    [request] = await receiver.wait_for(1)
    assert request.json["type"] == "clicked" and request.json["data"]["messageKey"] == "order-9"
    data = request.json["data"]
    assert data["url"] == "https://example.com/pricing"
    assert data["userAgent"] == "Mozilla/5.0" and data["ipAddress"] == "203.0.113.7"
    assert data["provider"]["name"] == "mailgun"


async def test_a_mailgun_retry_signed_again_is_recorded_once(api, source, signing_key, database):
    """Mailgun retries a webhook with a fresh signature (a new token): the event id finds the first one."""
    raw = delivered()
    assert (await post(api, source, webhook(raw, signing_key)))[0] == 200
    status, answer = await post(api, source, webhook(raw, signing_key))
    assert status == 200 and answer["recorded"] == 0 and answer["duplicates"] == 1, answer
    assert await event_count(database) == 1


async def test_a_replayed_mailgun_request_is_refused(api, source, signing_key, database):
    body = webhook(delivered(), signing_key)
    assert (await post(api, source, body))[0] == 200
    status, answer = await post(api, source, body)
    assert status == 401 and answer["error"]["code"] == "unauthorized", answer
    assert "received before" in answer["error"]["message"]
    assert await event_count(database) == 1


async def test_a_token_refused_for_its_signature_is_not_spent(api, source, signing_key, database):
    """Only an authentic request spends its token: a forgery carrying a token does not block the real one."""
    raw = delivered()
    forged = webhook(raw, "not-the-key", token="t" * 50)
    assert (await post(api, source, forged))[0] == 401
    status, answer = await post(api, source, webhook(raw, signing_key, token="t" * 50))
    assert status == 200 and answer["recorded"] == 1, answer
    assert await event_count(database) == 1


@pytest.mark.parametrize("case", ["bad_signature", "wrong_key", "stale", "future", "missing", "not_json"])
async def test_an_unauthentic_mailgun_request_is_refused_and_nothing_is_stored(
    api, source, signing_key, database, case
):
    raw = delivered()
    body = webhook(raw, signing_key)
    if case == "bad_signature":
        signature = sign(signing_key)
        signature["signature"] = sign(signing_key, token="another-token")["signature"]
        body = orjson.dumps({"signature": signature, "event-data": raw})
    elif case == "wrong_key":
        body = webhook(raw, secrets.token_hex(16))
    elif case == "stale":
        body = webhook(raw, signing_key, timestamp=int(time.time()) - 3600)
    elif case == "future":
        body = webhook(raw, signing_key, timestamp=int(time.time()) + 3600)
    elif case == "missing":
        body = orjson.dumps({"event-data": raw})
    elif case == "not_json":
        body = b"event=delivered&token=x&timestamp=1&signature=y"
    status, answer = await post(api, source, body)
    assert status == 401 and answer["error"]["code"] == "unauthorized", answer
    assert await event_count(database) == 0


async def test_a_subaccount_event_verifies_with_the_primary_accounts_key(api, source, signing_key):
    """Mailgun signs a subaccount's events with the subaccount's key and adds a parent-signature made with
    the primary account's: a source configured with the primary's key accepts them."""
    signature = sign(secrets.token_hex(16))  # the subaccount's key, unknown here
    signature["parent-signature"] = sign(signing_key, timestamp=int(signature["timestamp"]),
                                         token=signature["token"])["signature"]  # fmt: skip
    body = orjson.dumps({"signature": signature, "event-data": delivered()})
    status, answer = await post(api, source, body)
    assert status == 200 and answer["recorded"] == 1, answer


async def test_an_authentic_body_without_event_data_is_a_bad_request(api, source, signing_key, database):
    body = orjson.dumps({"signature": sign(signing_key)})
    status, answer = await post(api, source, body)
    assert status == 400, answer
    assert await event_count(database) == 0


MAPPING = [
    # (event-data fields, our type, data expected (subset), classification)
    ({"event": "accepted"}, "sent", {}, None),
    ({"event": "delivered", "delivery-status": {"code": 250, "message": "OK"}}, "delivered", {"smtpCode": 250}, None),
    ({"event": "failed", "severity": "permanent", "reason": "bounce", "delivery-status": bounce_status()},
     "bounced", {"bounceType": "hard", "smtpCode": 550, "status": "5.1.1"}, "permanent/bounce"),
    ({"event": "failed", "severity": "permanent", "reason": "generic",
      "delivery-status": {"code": 554, "message": "5.7.1 Message rejected as spam"}},
     "bounced", {"bounceType": "hard", "smtpCode": 554, "status": "5.7.1"}, "permanent/generic"),
    ({"event": "failed", "severity": "permanent", "reason": "suppress-bounce",
      "delivery-status": {"code": 605, "description": "Not delivering to previously bounced address", "message": ""}},
     "failed", {"reason": "not sent: the address bounced before (Mailgun suppression list): "
                          "Not delivering to previously bounced address"}, "permanent/suppress-bounce"),
    ({"event": "failed", "severity": "permanent", "reason": "suppress-unsubscribe", "delivery-status": {}},
     "failed", {"reason": "not sent: the recipient unsubscribed before (Mailgun suppression list)"},
     "permanent/suppress-unsubscribe"),
    ({"event": "failed", "severity": "permanent", "reason": "suppress-complaint", "delivery-status": {}},
     "failed", {"reason": "not sent: the recipient complained before (Mailgun suppression list)"},
     "permanent/suppress-complaint"),
    ({"event": "failed", "severity": "permanent", "reason": "old",
      "delivery-status": {"code": 499, "description": "Unable to connect to MX servers: [example.com]"}},
     "failed", {"reason": "not delivered: Mailgun's retries ran out: Unable to connect to MX servers: [example.com]",
                "smtpCode": 499}, "permanent/old"),
    ({"event": "failed", "severity": "temporary", "reason": "generic",
      "delivery-status": {"attempt-no": 3, "code": 451, "message": "4.7.1 Greylisted, try again later",
                          "retry-seconds": 1800}},
     "deferred", {"smtpCode": 451, "status": "4.7.1", "attempt": 3, "reason": "4.7.1 Greylisted, try again later"},
     "temporary/generic"),
    ({"event": "rejected", "recipient": None,
      "reject": {"reason": "Sandbox subdomains are for test purposes only.", "description": ""}},
     "failed", {"reason": "Sandbox subdomains are for test purposes only."}, None),
    ({"event": "opened", "ip": "203.0.113.7", "client-info": {"user-agent": "Mozilla/5.0"}},
     "opened", {"userAgent": "Mozilla/5.0", "ipAddress": "203.0.113.7"}, None),
    ({"event": "clicked", "url": "https://example.com/a"}, "clicked", {"url": "https://example.com/a"}, None),
    ({"event": "complained"}, "complained", {}, None),
    ({"event": "unsubscribed"}, "unsubscribed", {}, None),
]  # fmt: skip


MAPPING_IDS = ["/".join(str(f[k]) for k in ("event", "severity", "reason") if k in f) for f, *_ in MAPPING]


@pytest.mark.parametrize(("fields", "type_", "data", "classification"), MAPPING, ids=MAPPING_IDS)
async def test_each_mailgun_event_is_translated_as_the_mapping_table_says(
    api, source, signing_key, fields, type_, data, classification
):
    raw = event(fields["event"], key="order-map", **{k: v for k, v in fields.items() if k != "event"})
    raw = {k: v for k, v in raw.items() if v is not None}
    status, answer = await post(api, source, webhook(raw, signing_key))
    assert status == 200 and answer["recorded"] == 1, answer
    _, msg = await api.get("/v1/messages/order-map")
    [recorded] = msg["events"]
    assert recorded["type"] == type_
    assert {k: recorded["data"].get(k) for k in data} == data
    assert recorded["data"]["provider"].get("classification") == classification
    assert recorded["recipient"] == "ann@example.com"  # `rejected` names it only in the To header


@pytest.mark.parametrize("kind", ["stored", "list_member_uploaded", "list_member_upload_error", "list_uploaded"])
async def test_mailgun_events_with_no_counterpart_are_counted_as_ignored(api, source, signing_key, database, kind):
    status, answer = await post(api, source, webhook(event(kind), signing_key))
    assert status == 200 and answer == {"received": 1, "recorded": 0, "duplicates": 0, "ignored": 1}, answer
    assert await event_count(database) == 0


async def test_an_event_without_the_user_variable_is_filed_under_mailguns_message_id(api, source, signing_key):
    status, _ = await post(api, source, webhook(event("delivered", key=None), signing_key))
    assert status == 200
    status, msg = await api.get(f"/v1/messages/{MESSAGE_ID}")
    assert status == 200 and [e["type"] for e in msg["events"]] == ["delivered"], msg


async def test_mail_through_the_mailgun_relay_carries_the_messagekey_and_its_events_come_back(
    database, settings, aiohttp_client, smtp
):
    api = await relay_api(database, settings, aiohttp_client, smtp, "mailgun")
    signing_key = secrets.token_hex(16)
    status, src = await api.post("/v1/sources", {"name": "mg", "provider": "mailgun",
                                                 "config": {"signingKey": signing_key}})  # fmt: skip
    assert status == 201, src
    mail = await send_and_relay(api, smtp, "order-77")
    variables = json.loads(mail["X-Mailgun-Variables"])
    assert variables == {"messageKey": "order-77"}
    # Mailgun echoes X-Mailgun-Variables as user-variables, and the Message-ID without angle brackets.
    raw = event("delivered", key=None, **{"user-variables": variables})
    raw["message"]["headers"]["message-id"] = mail["Message-ID"].strip("<>")
    assert (await post(api, src, webhook(raw, signing_key)))[0] == 200
    assert await wait_until(lambda: types_of(api, "order-77", "sent", "delivered"))
