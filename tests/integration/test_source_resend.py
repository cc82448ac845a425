"""Resend's webhooks into a source: events shaped as Resend's documentation shows them, signed as Svix
signs them (Standard Webhooks, signed here with the `standardwebhooks` library and a secret made here);
each refusal stores nothing, and a retried message (same svix-id) is recorded once."""

from __future__ import annotations

import base64
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from standardwebhooks import Webhook

from tests.conftest import Api, setup_callback, wait_until
from tests.integration.sources import event_count, source_post
from tests.integration.test_source_relay import relay_api, send_and_relay, types_of

EMAIL_ID = "56761188-7520-42d8-8898-ff6fc54ce618"
MESSAGE_ID = "<0100019a2d6e1b2c-3f1a@email.example.com>"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def signed(secret: str, body: bytes, msg_id: str | None = None, timestamp: int | None = None) -> dict[str, str]:
    msg_id = msg_id or f"msg_{secrets.token_urlsafe(18)}"
    when = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, UTC)
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {"svix-id": msg_id, "svix-timestamp": str(int(when.timestamp())), "svix-signature": signature,
            "Content-Type": "application/json"}  # fmt: skip


def resend_event(kind: str, key: str | None = "order-1", tags: Any = None, **data: Any) -> dict[str, Any]:
    """An event as Resend's webhook documentation shows it."""
    if tags is None:
        tags = {"category": "receipt", **({"messageKey": key} if key else {})}
    return {
        "type": kind,
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "data": {
            "created_at": "2026-11-22T23:41:11.894719+00:00",
            "email_id": EMAIL_ID,
            "message_id": MESSAGE_ID,
            "from": "Acme <shop@example.com>",
            "to": ["ann@example.com"],
            "subject": "Receipt",
            "tags": tags,
            **data,
        },
    }


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
async def source(api: Api, secret: str) -> dict[str, Any]:
    status, body = await api.post(
        "/v1/sources", {"name": "rs", "provider": "resend", "config": {"signingSecret": secret}}
    )
    assert status == 201, body
    return body


async def post(api: Api, source: dict[str, Any], body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    return await source_post(api, source, body, headers)


async def test_the_signing_secret_is_a_secret_never_shown(api, source):
    assert source["config"] == {} and source["secretsSet"] == ["signingSecret"]


@pytest.mark.parametrize("value", ["not-a-secret", "whsec_", "whsec_***", base64.b64encode(b"k" * 24).decode()])
async def test_a_signing_secret_not_shaped_as_resend_shows_it_is_refused(api, value):
    status, body = await api.post("/v1/sources", {"name": "rs", "provider": "resend",
                                                  "config": {"signingSecret": value}})  # fmt: skip
    assert status == 400, body


async def test_a_source_made_before_the_endpoint_refuses_everything_until_its_secret_is_set(api, database):
    """Resend shows the signing secret once the endpoint (the source's url) exists: the source is created
    first, and refuses every request until PATCH sets the secret."""
    status, src = await api.post("/v1/sources", {"name": "rs", "provider": "resend", "config": {}})
    assert status == 201 and src["secretsSet"] == [], src
    secret = new_secret()
    body = orjson.dumps(resend_event("email.delivered"))
    status, answer = await post(api, src, body, signed(secret, body))
    assert status == 401 and answer["error"]["code"] == "unauthorized", answer
    assert await event_count(database) == 0
    status, patched = await api.patch(f"/v1/sources/{src['sourceId']}", {"config": {"signingSecret": secret}})
    assert status == 200 and patched["secretsSet"] == ["signingSecret"] and patched["config"] == {}, patched
    status, answer = await post(api, src, body, signed(secret, body))
    assert status == 200 and answer["recorded"] == 1, answer


async def test_signed_resend_events_land_in_the_message_timeline_under_the_messagekey_tag(api, source, secret):
    bounce = {"message": "The recipient's email address is on the suppression list because it has a recent "
              "history of producing hard bounces.", "subType": "Suppressed", "type": "Permanent"}  # fmt: skip
    for raw in (
        resend_event("email.sent"),
        resend_event("email.delivered"),
        resend_event("email.bounced", bounce=bounce),
    ):
        body = orjson.dumps(raw)
        status, answer = await post(api, source, body, signed(secret, body, msg_id=f"msg_{raw['type']}"))
        assert status == 200 and answer == {"received": 1, "recorded": 1, "duplicates": 0, "ignored": 0}, answer
    status, msg = await api.get("/v1/messages/order-1")
    assert status == 200, msg
    assert [e["type"] for e in msg["events"]] == ["sent", "delivered", "bounced"]
    bounced = msg["events"][-1]
    assert bounced["recipient"] == "ann@example.com"
    assert bounced["data"]["bounceType"] == "hard" and bounced["data"]["reason"] == bounce["message"]
    assert bounced["data"]["provider"] == {
        "name": "resend",
        "sourceId": source["sourceId"],
        "eventId": "msg_email.bounced",
        "messageId": EMAIL_ID,
        "rawType": "email.bounced",
        "classification": "Permanent/Suppressed",
        "smtpMessageId": MESSAGE_ID.strip("<>"),
    }


async def test_a_resend_event_reaches_a_subscribed_callback(api, source, secret, receiver):
    await setup_callback(api, receiver, event_types=["clicked"])
    click = {"ipAddress": "122.115.53.11", "link": "https://resend.com", "timestamp": "2026-11-24T05:00:57.163Z",
             "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)"}  # fmt: skip
    body = orjson.dumps(resend_event("email.clicked", key="order-9", click=click))
    assert (await post(api, source, body, signed(secret, body)))[0] == 200
    [request] = await receiver.wait_for(1)
    assert request.json["type"] == "clicked" and request.json["data"]["messageKey"] == "order-9"
    data = request.json["data"]
    assert data["url"] == "https://resend.com" and data["ipAddress"] == "122.115.53.11"
    assert data["userAgent"].startswith("Mozilla/5.0") and data["provider"]["name"] == "resend"
    assert data["occurredAt"].startswith("2026-11-24T05:00:57")  # the click, not the event's creation


async def test_a_resend_retry_is_recorded_once(api, source, secret, database):
    """Svix retries a message with the same svix-id (signed again, with a new timestamp)."""
    body = orjson.dumps(resend_event("email.delivered"))
    assert (await post(api, source, body, signed(secret, body, msg_id="msg_2Kv8")))[0] == 200
    status, answer = await post(
        api, source, body, signed(secret, body, msg_id="msg_2Kv8", timestamp=int(time.time()) + 5)
    )
    assert status == 200 and answer["recorded"] == 0 and answer["duplicates"] == 1, answer
    assert await event_count(database) == 1


async def test_a_replayed_resend_request_is_recorded_once(api, source, secret, database):
    """Resend has no one-time value: the same signed request again (within the tolerance) is a duplicate."""
    body = orjson.dumps(resend_event("email.delivered"))
    headers = signed(secret, body)
    assert (await post(api, source, body, headers))[0] == 200
    status, answer = await post(api, source, body, headers)
    assert status == 200 and answer["duplicates"] == 1 and answer["recorded"] == 0, answer
    assert await event_count(database) == 1


async def test_a_signature_header_with_a_rotated_secret_is_accepted_by_either_signature(api, source, secret):
    """While a secret rotates, svix-signature carries one v1 signature per secret, space separated."""
    body = orjson.dumps(resend_event("email.delivered"))
    headers = signed(secret, body)
    other = signed(new_secret(), body, msg_id=headers["svix-id"], timestamp=int(headers["svix-timestamp"]))
    headers["svix-signature"] = f"{other['svix-signature']} {headers['svix-signature']}"
    status, answer = await post(api, source, body, headers)
    assert status == 200 and answer["recorded"] == 1, answer


async def test_standard_webhooks_header_names_are_accepted(api, source, secret):
    body = orjson.dumps(resend_event("email.delivered"))
    headers = {k.replace("svix-", "webhook-"): v for k, v in signed(secret, body).items()}
    status, answer = await post(api, source, body, headers)
    assert status == 200 and answer["recorded"] == 1, answer


@pytest.mark.parametrize(
    "case", ["bad_signature", "wrong_secret", "stale", "future", "other_id", "missing", "no_v1", "asymmetric_only"]
)
async def test_an_unauthentic_resend_request_is_refused_and_nothing_is_stored(api, source, secret, database, case):
    body = orjson.dumps(resend_event("email.delivered"))
    headers = signed(secret, body)
    if case == "bad_signature":
        headers = signed(secret, body.replace(b"order-1", b"order-2"))
    elif case == "wrong_secret":
        headers = signed(new_secret(), body)
    elif case == "stale":
        headers = signed(secret, body, timestamp=int(time.time()) - 3600)
    elif case == "future":
        headers = signed(secret, body, timestamp=int(time.time()) + 3600)
    elif case == "other_id":  # the signature covers the id: a valid one cannot be moved to another id
        headers["svix-id"] = "msg_other"
    elif case == "missing":
        headers = {"Content-Type": "application/json"}
    elif case == "no_v1":
        headers["svix-signature"] = headers["svix-signature"].removeprefix("v1,")
    elif case == "asymmetric_only":
        headers["svix-signature"] = "v1a," + headers["svix-signature"].removeprefix("v1,")
    status, answer = await post(api, source, body, headers)
    assert status == 401 and answer["error"]["code"] == "unauthorized", answer
    assert await event_count(database) == 0


async def test_an_authentic_body_that_is_not_an_event_is_a_bad_request(api, source, secret, database):
    for body in (b"[1, 2]", b"not json", orjson.dumps({"type": "email.sent", "data": []})):
        status, answer = await post(api, source, body, signed(secret, body))
        assert status == 400, answer
    assert await event_count(database) == 0


BOUNCE_TRANSIENT = {
    "type": "Transient",
    "subType": "MailboxFull",
    "message": "The recipient's mailbox is full.",
    "diagnosticCode": ["smtp; 452 4.2.2 The email account that you tried to reach is over quota"],
}
MAPPING = [
    # (type, data fields, our type, data expected (subset), classification)
    ("email.sent", {}, "sent", {}, None),
    ("email.delivered", {}, "delivered", {}, None),
    ("email.delivery_delayed", {}, "deferred", {}, None),
    ("email.bounced", {"bounce": {"type": "Permanent", "subType": "General", "message": "No such user",
                                  "diagnosticCode": ["smtp; 550 5.1.1 user unknown"]}},
     "bounced", {"bounceType": "hard", "smtpCode": 550, "status": "5.1.1", "reason": "No such user"},
     "Permanent/General"),
    ("email.bounced", {"bounce": BOUNCE_TRANSIENT}, "bounced",
     {"bounceType": "soft", "smtpCode": 452, "status": "4.2.2"}, "Transient/MailboxFull"),
    ("email.bounced", {"bounce": {"type": "Undetermined", "subType": "Undetermined", "message": "Unknown"}},
     "bounced", {"bounceType": "hard"}, "Undetermined/Undetermined"),
    ("email.complained", {}, "complained", {}, None),
    ("email.opened", {}, "opened", {}, None),
    ("email.clicked", {"click": {"ipAddress": "203.0.113.7", "link": "https://example.com/a",
                                 "timestamp": "2026-11-24T05:00:57.163Z", "userAgent": "Mozilla/5.0"}},
     "clicked", {"url": "https://example.com/a", "ipAddress": "203.0.113.7", "userAgent": "Mozilla/5.0"}, None),
    ("email.failed", {"failed": {"reason": "reached_daily_quota"}}, "failed", {"reason": "reached_daily_quota"}, None),
    ("email.suppressed", {"suppressed": {"type": "OnAccountSuppressionList",
                                         "message": "Resend has suppressed sending to this address"}},
     "failed", {"reason": "Resend has suppressed sending to this address"}, "OnAccountSuppressionList"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "fields", "type_", "data", "classification"),
    MAPPING,
    ids=[f"{m[0]}-{m[4]}" if m[4] else m[0] for m in MAPPING],
)
async def test_each_resend_event_is_translated_as_the_mapping_table_says(
    api, source, secret, kind, fields, type_, data, classification
):
    body = orjson.dumps(resend_event(kind, key="order-map", **fields))
    status, answer = await post(api, source, body, signed(secret, body))
    assert status == 200 and answer["recorded"] == 1, answer
    _, msg = await api.get("/v1/messages/order-map")
    [recorded] = msg["events"]
    assert recorded["type"] == type_
    assert {k: recorded["data"].get(k) for k in data} == data
    assert recorded["data"]["provider"].get("classification") == classification
    assert recorded["recipient"] == "ann@example.com"


IGNORED = [
    ("email.scheduled", resend_event("email.scheduled")["data"]),
    ("email.received", {"email_id": "a1", "from": "bob@example.net", "to": ["in@example.com"], "subject": "Hi"}),
    ("contact.created", {"id": "c1", "audience_id": "a1", "email": "ann@example.com", "unsubscribed": False}),
    ("contact.updated", {"id": "c1", "audience_id": "a1", "email": "ann@example.com", "unsubscribed": True}),
    ("contact.deleted", {"id": "c1", "audience_id": "a1", "email": "ann@example.com", "unsubscribed": False}),
    ("domain.created", {"id": "d1", "name": "example.com", "status": "pending", "records": []}),
    ("domain.updated", {"id": "d1", "name": "example.com", "status": "verified", "records": []}),
    ("domain.deleted", {"id": "d1", "name": "example.com", "status": "verified", "records": []}),
]


@pytest.mark.parametrize(("kind", "data"), IGNORED, ids=[i[0] for i in IGNORED])
async def test_resend_events_with_no_counterpart_are_counted_as_ignored(api, source, secret, database, kind, data):
    body = orjson.dumps({"type": kind, "created_at": "2026-11-22T23:41:12.126Z", "data": data})
    status, answer = await post(api, source, body, signed(secret, body))
    assert status == 200 and answer == {"received": 1, "recorded": 0, "duplicates": 0, "ignored": 1}, answer
    assert await event_count(database) == 0


async def test_a_messagekey_tag_in_the_list_shape_is_read_too(api, source, secret):
    tags = [{"name": "category", "value": "receipt"}, {"name": "messageKey", "value": "order-list"}]
    body = orjson.dumps(resend_event("email.delivered", tags=tags))
    assert (await post(api, source, body, signed(secret, body)))[0] == 200
    status, msg = await api.get("/v1/messages/order-list")
    assert status == 200 and [e["type"] for e in msg["events"]] == ["delivered"], msg


async def test_an_event_without_the_tag_is_filed_under_resends_email_id(api, source, secret):
    body = orjson.dumps(resend_event("email.delivered", key=None))
    assert (await post(api, source, body, signed(secret, body)))[0] == 200
    status, msg = await api.get(f"/v1/messages/{EMAIL_ID}")
    assert status == 200 and [e["type"] for e in msg["events"]] == ["delivered"], msg


async def test_mail_through_the_resend_relay_is_found_by_the_message_id_resend_echoes(
    database, settings, aiohttp_client, smtp
):
    """Resend's SMTP relay takes no tag header: its events name the Message-ID (data.message_id), which
    dispatcher recorded when it sent the mail."""
    api = await relay_api(database, settings, aiohttp_client, smtp, "resend")
    secret = new_secret()
    status, src = await api.post("/v1/sources", {"name": "rs", "provider": "resend",
                                                 "config": {"signingSecret": secret}})  # fmt: skip
    assert status == 201, src
    mail = await send_and_relay(api, smtp, "order-77")
    await wait_until(lambda: types_of(api, "order-77", "sent"))
    raw = resend_event("email.delivered", key=None)
    raw["data"]["message_id"] = mail["Message-ID"]
    body = orjson.dumps(raw)
    assert (await post(api, src, body, signed(secret, body)))[0] == 200
    assert await wait_until(lambda: types_of(api, "order-77", "sent", "delivered"))
