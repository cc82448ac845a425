"""Postmark's webhooks into a source: one record per request, shaped as Postmark's documentation shows them,
authenticated by the HTTP basic auth credentials of the webhook URL; each refusal stores nothing."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.conftest import Api, setup_callback
from tests.integration.sources import event_count, source_post

USERNAME = "postmark-hook"


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


def at(seconds_ago: int) -> str:
    """A time as Postmark writes it: ISO 8601 with seven fraction digits, in UTC."""
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "9Z"


def postmark_records(key: str = "order-1") -> list[dict[str, Any]]:
    common = {"MessageStream": "outbound", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
              "Tag": "welcome-email", "Metadata": {"messageKey": key, "PropA": "some value"}}  # fmt: skip
    client = {
        "Client": {"Name": "Chrome 140.0.7339.80", "Company": "Google", "Family": "Chrome"},
        "OS": {"Name": "macOS 26 Tahoe", "Company": "Apple Computer, Inc.", "Family": "macOS"},
        "Platform": "Desktop",
        "UserAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 15_0)",
        "Geo": {"CountryISOCode": "US", "City": "Houston", "IP": "203.0.113.42"},
    }
    return [
        {**common, "RecordType": "Delivery", "ServerID": 23, "Recipient": "ann@example.com",
         "DeliveredAt": at(5), "Details": "250 2.0.0 OK  1762360434 x12-20020a05 - gsmtp"},
        {**common, **client, "RecordType": "Open", "FirstOpen": True, "ReadSeconds": 5, "ReceivedAt": at(4),
         "Recipient": "ann@example.com"},
        {**common, **client, "RecordType": "Click", "ClickLocation": "HTML", "ReceivedAt": at(3),
         "OriginalLink": "https://example.com/confirm-your-address", "Recipient": "ann@example.com"},
        {**common, "RecordType": "Bounce", "ID": 692560173, "Type": "HardBounce", "TypeCode": 1,
         "Name": "Hard bounce", "ServerID": 23,
         "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
         "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
         "Email": "ann@example.com", "From": "alanturing@computers.com", "BouncedAt": at(2),
         "DumpAvailable": True, "Inactive": True, "CanActivate": True, "Subject": "Saying Hello!"},
        {**common, "RecordType": "SpamComplaint", "ID": 692560174, "Type": "SpamComplaint", "TypeCode": 100001,
         "Name": "Spam complaint", "ServerID": 23,
         "Description": "The subscriber explicitly marked this message as spam.", "Details": "",
         "Email": "ann@example.com", "From": "alanturing@computers.com", "BouncedAt": at(1),
         "Inactive": True, "CanActivate": False, "Subject": "Saying Hello!"},
        {**common, "RecordType": "SubscriptionChange", "ServerID": 23, "ChangedAt": at(0),
         "Recipient": "ann@example.com", "Origin": "Recipient", "SuppressSending": True,
         "SuppressionReason": "ManualSuppression"},
    ]  # fmt: skip


@pytest.fixture
async def source(api: Api) -> tuple[dict[str, Any], str]:
    password = secrets.token_urlsafe(24)
    status, body = await api.post(
        "/v1/sources", {"name": "pm", "provider": "postmark", "config": {"username": USERNAME, "password": password}}
    )
    assert status == 201, body
    return body, password


async def post_all(api: Api, src: dict[str, Any], password: str, records: list[dict[str, Any]]) -> list[Any]:
    answers = []
    for record in records:
        status, answer = await source_post(api, src, orjson.dumps(record), basic(USERNAME, password))
        assert status == 200, answer
        answers.append(answer)
    return answers


async def test_postmark_records_land_in_the_message_timeline_under_the_messagekey_metadata(api, source):
    src, password = source
    records = postmark_records()
    answers = await post_all(api, src, password, records)
    assert all(a == {"received": 1, "recorded": 1, "duplicates": 0, "ignored": 0} for a in answers), answers
    status, msg = await api.get("/v1/messages/order-1")
    assert status == 200, msg
    assert [e["type"] for e in msg["events"]] == ["delivered", "opened", "clicked", "bounced", "complained",
                                                  "unsubscribed"]  # fmt: skip
    delivered, opened, clicked, bounced, complained, unsubscribed = msg["events"]
    assert bounced["data"]["bounceType"] == "hard" and bounced["data"]["smtpCode"] == 550
    assert bounced["data"]["status"] == "5.1.1" and bounced["data"]["reason"].startswith("smtp;550 5.1.1")
    assert bounced["data"]["provider"] == {
        "name": "postmark",
        "sourceId": src["sourceId"],
        "eventId": "692560173",
        "messageId": "883953f4-6105-42a2-a16a-77a8eac79483",
        "rawType": "Bounce",
        "classification": "HardBounce",
    }
    assert bounced["recipient"] == "ann@example.com"
    assert bounced["occurredAt"][:19] == records[3]["BouncedAt"][:19]
    assert opened["data"]["userAgent"].startswith("Mozilla/5.0") and opened["data"]["ipAddress"] == "203.0.113.42"
    assert clicked["data"]["url"] == "https://example.com/confirm-your-address"
    assert complained["data"]["provider"]["eventId"] == "692560174"
    assert unsubscribed["data"]["provider"]["classification"] == "Recipient/ManualSuppression"
    assert delivered["data"]["provider"]["eventId"].startswith("sha256:")


async def test_a_record_without_a_messagekey_is_filed_under_postmarks_message_id(api, source):
    src, password = source
    record = postmark_records()[0]
    del record["Metadata"]
    await post_all(api, src, password, [record])
    status, msg = await api.get("/v1/messages/883953f4-6105-42a2-a16a-77a8eac79483")
    assert status == 200, msg
    assert [e["type"] for e in msg["events"]] == ["delivered"]


@pytest.mark.parametrize("index", [0, 3], ids=["delivery_without_id", "bounce_with_id"])
async def test_a_retried_postmark_request_is_recorded_once(api, source, database, index):
    src, password = source
    record = postmark_records()[index]
    [first, retry] = await post_all(api, src, password, [record, record])
    assert first["recorded"] == 1
    assert retry == {"received": 1, "recorded": 0, "duplicates": 1, "ignored": 0}
    assert await event_count(database) == 1


@pytest.mark.parametrize("case", ["wrong_password", "wrong_username", "missing", "malformed", "bearer", "other_source"])
async def test_an_unauthentic_postmark_request_is_refused_and_nothing_is_stored(api, source, database, case):
    src, password = source
    headers = {
        "wrong_password": basic(USERNAME, password + "x"),
        "wrong_username": basic("someone-else", password),
        "missing": {"Content-Type": "application/json"},
        "malformed": {"Authorization": "Basic !!!not-base64!!!", "Content-Type": "application/json"},
        "bearer": {"Authorization": f"Bearer {password}", "Content-Type": "application/json"},
        "other_source": basic(USERNAME, secrets.token_urlsafe(24)),
    }[case]
    status, answer = await source_post(api, src, orjson.dumps(postmark_records()[3]), headers)
    assert status == 401 and answer["error"]["code"] == "unauthorized", answer
    assert password not in answer["error"]["message"]
    assert await event_count(database) == 0


def bounce(kind: str, **extra: Any) -> dict[str, Any]:
    return {**postmark_records()[3], "Type": kind, **extra}


# Postmark record → (our type or None when ignored, bounceType)
MAPPING: list[tuple[str, dict[str, Any], str | None, str | None]] = [
    ("Delivery", postmark_records()[0], "delivered", None),
    ("Open", postmark_records()[1], "opened", None),
    ("Click", postmark_records()[2], "clicked", None),
    ("SpamComplaint", postmark_records()[4], "complained", None),
    ("SubscriptionChange/ManualSuppression", postmark_records()[5], "unsubscribed", None),
    ("SubscriptionChange/reactivated", {**postmark_records()[5], "SuppressSending": False,
                                        "SuppressionReason": None}, None, None),
    ("SubscriptionChange/HardBounce", {**postmark_records()[5], "SuppressionReason": "HardBounce"}, None, None),
    ("Bounce/HardBounce", bounce("HardBounce"), "bounced", "hard"),
    ("Bounce/BadEmailAddress", bounce("BadEmailAddress"), "bounced", "hard"),
    ("Bounce/SoftBounce", bounce("SoftBounce"), "bounced", "soft"),
    ("Bounce/Transient", bounce("Transient"), "bounced", "soft"),
    ("Bounce/DnsError", bounce("DnsError"), "bounced", "soft"),
    ("Bounce/Unknown", bounce("Unknown"), "bounced", "soft"),
    ("Bounce/SpamNotification", bounce("SpamNotification"), "bounced", "soft"),
    ("Bounce/VirusNotification", bounce("VirusNotification"), "bounced", "soft"),
    ("Bounce/Blocked", bounce("Blocked"), "bounced", "soft"),
    ("Bounce/DMARCPolicy", bounce("DMARCPolicy"), "bounced", "soft"),
    ("Bounce/SpamComplaint", bounce("SpamComplaint"), "complained", None),
    ("Bounce/Unsubscribe", bounce("Unsubscribe"), "unsubscribed", None),
    ("Bounce/ManuallyDeactivated", bounce("ManuallyDeactivated"), "failed", None),
    ("Bounce/Unconfirmed", bounce("Unconfirmed"), "failed", None),
    ("Bounce/SMTPApiError", bounce("SMTPApiError"), "failed", None),
    ("Bounce/TemplateRenderingFailed", bounce("TemplateRenderingFailed"), "failed", None),
    ("Bounce/AutoResponder", bounce("AutoResponder"), None, None),
    ("Bounce/AddressChange", bounce("AddressChange"), None, None),
    ("Bounce/Subscribe", bounce("Subscribe"), None, None),
    ("Bounce/ChallengeVerification", bounce("ChallengeVerification"), None, None),
    ("Bounce/OpenRelayTest", bounce("OpenRelayTest"), None, None),
    ("Bounce/InboundError", bounce("InboundError"), None, None),
    ("Inbound", {"FromName": "Alan Turing", "MessageStream": "inbound", "From": "alanturing@computers.com",
                 "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Subject": "Saying Hello!"}, None, None),
]  # fmt: skip


@pytest.mark.parametrize(("record", "expected", "bounce_type"), [m[1:] for m in MAPPING], ids=[m[0] for m in MAPPING])
async def test_every_postmark_record_is_translated_as_the_mapping_table_says(
    api, source, record, expected, bounce_type
):
    src, password = source
    [answer] = await post_all(api, src, password, [record])
    assert (answer["recorded"], answer["ignored"]) == ((1, 0) if expected else (0, 1)), answer
    status, msg = await api.get("/v1/messages/order-1")
    if expected is None:
        assert status == 404, msg
        return
    [event] = msg["events"]
    assert event["type"] == expected
    assert event["data"].get("bounceType") == bounce_type
    if expected == "failed":
        assert event["data"]["reason"]


async def test_a_postmark_event_reaches_a_subscribed_callback(api, source, receiver):
    src, password = source
    await setup_callback(api, receiver, event_types=["bounced"])
    await post_all(api, src, password, postmark_records("order-9"))
    [request] = await receiver.wait_for(1)
    assert request.json["type"] == "bounced" and request.json["data"]["messageKey"] == "order-9"
    assert request.json["data"]["provider"]["name"] == "postmark"
    assert request.headers["webhook-signature"].startswith("v1,")


async def test_a_body_that_is_not_a_postmark_record_is_a_400_and_stores_nothing(api, source, database):
    src, password = source
    status, answer = await source_post(api, src, orjson.dumps([postmark_records()[0]]), basic(USERNAME, password))
    assert status == 400, answer
    assert await event_count(database) == 0


@pytest.mark.parametrize(
    ("config", "field"),
    [({"username": USERNAME}, "config.password"), ({"password": "pw"}, "config.username"),
     ({"username": "a:b", "password": "pw"}, "config.username")],
    ids=["no_password", "no_username", "colon_in_username"],
)  # fmt: skip
async def test_a_postmark_source_needs_its_basic_auth_credentials(api, config, field):
    status, body = await api.post("/v1/sources", {"name": "pm", "provider": "postmark", "config": config})
    assert status == 400 and body["error"]["field"] == field, body


async def test_the_postmark_password_is_secret_and_never_shown(api, source):
    src, password = source
    assert src["config"] == {"username": USERNAME} and src["secretsSet"] == ["password"]
    status, shown = await api.get(f"/v1/sources/{src['sourceId']}")
    assert status == 200 and password not in orjson.dumps(shown).decode()
