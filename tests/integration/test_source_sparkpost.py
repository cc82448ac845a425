"""SparkPost's event webhooks into a source: batches of msys-wrapped events shaped as SparkPost's documentation
shows them, authenticated by the webhook's basic auth credentials or its X-MessageSystems-Webhook-Token;
each refusal stores nothing, and a batch is recorded all or nothing."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import orjson
import pytest

from tests.conftest import Api, setup_callback
from tests.integration.sources import event_count, source_post

USERNAME = "sparkpost-hook"
TOKEN_HEADER = "X-MessageSystems-Webhook-Token"


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


def event(kind: str, type_: str, n: int, key: str = "order-1", **extra: Any) -> dict[str, Any]:
    """One batch item as SparkPost sends it; n orders the events (timestamps) and makes event_id unique."""
    body = {
        "type": type_,
        "event_id": f"9235692769381385{n}",
        "timestamp": str(int(time.time()) - 20 + n),
        "message_id": "000443ee14578172be22",
        "transmission_id": "65832150921904138",
        "campaign_id": "Example Campaign Name",
        "customer_id": "1",
        "subaccount_id": "101",
        "rcpt_to": "recipient@example.com",
        "raw_rcpt_to": "recipient@example.com",
        "rcpt_meta": {"messageKey": key},
        "rcpt_tags": ["male", "US"],
        "friendly_from": "sender@example.com",
        "subject": "Summer deals are here!",
        **extra,
    }
    return {"msys": {kind: body}}


ENGAGEMENT = {"user_agent": "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0", "ip_address": "203.0.113.9"}


def sparkpost_batch(key: str = "order-1") -> list[dict[str, Any]]:
    return [
        event("message_event", "injection", 0, key),
        event("message_event", "delivery", 1, key, ip_address="18.236.253.72", queue_time="12"),
        event("track_event", "open", 2, key, **ENGAGEMENT),
        event("track_event", "click", 3, key, target_link_url="https://example.com/pricing", **ENGAGEMENT),
        event("message_event", "bounce", 4, key, bounce_class="10", error_code="550",
              raw_reason="550 5.1.1 <recipient@example.com>: Recipient address rejected: User unknown",
              reason="550 5.1.1 <recipient@example.com>: Recipient address rejected: User unknown"),
        event("message_event", "spam_complaint", 5, key, fbtype="abuse", report_by="server.email.com"),
        event("unsubscribe_event", "link_unsubscribe", 6, key, mailfrom="recipient@example.com"),
        event("relay_event", "relay_injection", 7, key),
    ]  # fmt: skip


@pytest.fixture
async def source(api: Api) -> tuple[dict[str, Any], str]:
    password = secrets.token_urlsafe(24)
    config = {"username": USERNAME, "password": password}
    status, body = await api.post("/v1/sources", {"name": "sp", "provider": "sparkpost", "config": config})
    assert status == 201, body
    return body, password


async def test_sparkpost_batches_land_in_the_message_timeline_under_the_rcpt_meta_messagekey(api, source):
    src, password = source
    body = orjson.dumps(sparkpost_batch())
    status, answer = await source_post(api, src, body, basic(USERNAME, password))
    assert status == 200, answer
    assert answer == {"received": 8, "recorded": 7, "duplicates": 0, "ignored": 1}
    status, msg = await api.get("/v1/messages/order-1")
    assert status == 200, msg
    assert [e["type"] for e in msg["events"]] == ["sent", "delivered", "opened", "clicked", "bounced",
                                                  "complained", "unsubscribed"]  # fmt: skip
    opened, clicked, bounced = msg["events"][2:5]
    assert bounced["data"]["bounceType"] == "hard" and bounced["data"]["smtpCode"] == 550
    assert bounced["data"]["status"] == "5.1.1"
    assert bounced["data"]["provider"] == {
        "name": "sparkpost",
        "sourceId": src["sourceId"],
        "eventId": "92356927693813854",
        "messageId": "000443ee14578172be22",
        "rawType": "bounce",
        "classification": "10 Invalid Recipient",
    }
    assert bounced["recipient"] == "recipient@example.com"
    assert clicked["data"]["url"] == "https://example.com/pricing"
    assert opened["data"]["ipAddress"] == "203.0.113.9" and opened["data"]["userAgent"].startswith("Mozilla")


async def test_sparkposts_test_batch_with_an_empty_msys_is_accepted(api, source, database):
    src, password = source
    status, answer = await source_post(api, src, b'[{"msys":{}}]', basic(USERNAME, password))
    assert status == 200, answer
    assert answer == {"received": 0, "recorded": 0, "duplicates": 0, "ignored": 0}
    assert await event_count(database) == 0


async def test_a_sparkpost_batch_is_recorded_all_or_nothing(api, source, database):
    src, password = source
    body = orjson.dumps([*sparkpost_batch(), {"msys": {"message_event": "not an event"}}])
    status, answer = await source_post(api, src, body, basic(USERNAME, password))
    assert status == 400, answer
    assert await event_count(database) == 0


async def test_a_retried_sparkpost_batch_is_recorded_once(api, source, database):
    src, password = source
    body = orjson.dumps(sparkpost_batch())
    assert (await source_post(api, src, body, basic(USERNAME, password)))[0] == 200
    status, answer = await source_post(api, src, body, basic(USERNAME, password))
    assert status == 200 and answer["recorded"] == 0 and answer["duplicates"] == 7, answer
    assert await event_count(database) == 7


async def test_the_webhook_token_authenticates_a_source_configured_with_one(api, database):
    token = secrets.token_urlsafe(24)
    status, src = await api.post("/v1/sources", {"name": "sp", "provider": "sparkpost", "config": {"token": token}})
    assert status == 201 and src["config"] == {} and src["secretsSet"] == ["token"], src
    body = orjson.dumps(sparkpost_batch())
    headers = {TOKEN_HEADER: token, "Content-Type": "application/json"}
    assert (await source_post(api, src, body, headers))[1]["recorded"] == 7
    headers[TOKEN_HEADER] = token + "x"
    status, answer = await source_post(api, src, orjson.dumps(sparkpost_batch("order-2")), headers)
    assert status == 401, answer
    assert await event_count(database) == 7


@pytest.mark.parametrize(
    "case", ["wrong_password", "wrong_username", "missing", "wrong_token_beside_right_basic", "token_not_configured"]
)
async def test_an_unauthentic_sparkpost_request_is_refused_and_nothing_is_stored(api, source, database, case):
    src, password = source
    headers = {
        "wrong_password": basic(USERNAME, password + "x"),
        "wrong_username": basic("someone-else", password),
        "missing": {"Content-Type": "application/json"},
        "wrong_token_beside_right_basic": {**basic(USERNAME, password), TOKEN_HEADER: "not-the-token"},
        "token_not_configured": {TOKEN_HEADER: password, "Content-Type": "application/json"},
    }[case]
    if case == "wrong_token_beside_right_basic":  # a source with both: every credential presented must be right
        status, _ = await api.patch(f"/v1/sources/{src['sourceId']}", {"config": {"token": secrets.token_urlsafe(24)}})
        assert status == 200
    status, answer = await source_post(api, src, orjson.dumps(sparkpost_batch()), headers)
    assert status == 401 and answer["error"]["code"] == "unauthorized", answer
    assert password not in answer["error"]["message"]
    assert await event_count(database) == 0


def message(type_: str, **extra: Any) -> dict[str, Any]:
    return event("message_event", type_, 0, **extra)


# SparkPost event → (our type or None when ignored, bounceType)
MAPPING: list[tuple[str, dict[str, Any], str | None, str | None]] = [
    ("injection", message("injection"), "sent", None),
    ("delivery", message("delivery"), "delivered", None),
    ("delay", message("delay", bounce_class="70", raw_reason="421 4.7.0 Try again later"), "deferred", None),
    ("policy_rejection", message("policy_rejection", bounce_class="25", raw_reason="550 5.7.1 recipient suppressed"),
     "failed", None),
    ("generation_failure", event("gen_event", "generation_failure", 0, error_code="1902"), "failed", None),
    ("generation_rejection", event("gen_event", "generation_rejection", 0), "failed", None),
    ("out_of_band", message("out_of_band", bounce_class="10", raw_reason="550 5.1.1 no such user"), "bounced", "hard"),
    ("spam_complaint", message("spam_complaint", fbtype="abuse"), "complained", None),
    ("open", event("track_event", "open", 0), "opened", None),
    ("initial_open", event("track_event", "initial_open", 0), "opened", None),
    ("amp_open", event("track_event", "amp_open", 0), "opened", None),
    ("amp_initial_open", event("track_event", "amp_initial_open", 0), "opened", None),
    ("click", event("track_event", "click", 0, target_link_url="https://example.com"), "clicked", None),
    ("amp_click", event("track_event", "amp_click", 0, target_link_url="https://example.com"), "clicked", None),
    ("list_unsubscribe", event("unsubscribe_event", "list_unsubscribe", 0), "unsubscribed", None),
    ("link_unsubscribe", event("unsubscribe_event", "link_unsubscribe", 0), "unsubscribed", None),
    ("relay_delivery", event("relay_event", "relay_delivery", 0), None, None),
    ("sms_status", message("sms_status"), None, None),
    *[(f"bounce/{code}", message("bounce", bounce_class=code, raw_reason="550 rejected"), our, kind)
      for code, our, kind in [("1", "bounced", "soft"), ("10", "bounced", "hard"), ("20", "bounced", "soft"),
                              ("21", "bounced", "soft"), ("22", "bounced", "soft"), ("23", "bounced", "soft"),
                              ("24", "bounced", "soft"), ("25", "failed", None), ("26", "failed", None),
                              ("30", "bounced", "hard"), ("40", "bounced", "soft"), ("50", "bounced", "soft"),
                              ("51", "bounced", "soft"), ("52", "bounced", "soft"), ("53", "bounced", "soft"),
                              ("54", "bounced", "soft"), ("60", None, None), ("70", "bounced", "soft"),
                              ("80", None, None), ("90", "bounced", "hard"), ("100", None, None),
                              ("999", "bounced", "soft")]],
]  # fmt: skip


@pytest.mark.parametrize(("item", "expected", "bounce_type"), [m[1:] for m in MAPPING], ids=[m[0] for m in MAPPING])
async def test_every_sparkpost_event_is_translated_as_the_mapping_table_says(api, source, item, expected, bounce_type):
    src, password = source
    status, answer = await source_post(api, src, orjson.dumps([item]), basic(USERNAME, password))
    assert status == 200, answer
    assert (answer["recorded"], answer["ignored"]) == ((1, 0) if expected else (0, 1)), answer
    status, msg = await api.get("/v1/messages/order-1")
    if expected is None:
        assert status == 404, msg
        return
    [recorded] = msg["events"]
    assert recorded["type"] == expected
    assert recorded["data"].get("bounceType") == bounce_type
    if expected == "failed":
        assert recorded["data"]["reason"]


async def test_a_sparkpost_event_reaches_a_subscribed_callback(api, source, receiver):
    src, password = source
    await setup_callback(api, receiver, event_types=["bounced"])
    body = orjson.dumps(sparkpost_batch("order-9"))
    assert (await source_post(api, src, body, basic(USERNAME, password)))[0] == 200
    [request] = await receiver.wait_for(1)
    assert request.json["type"] == "bounced" and request.json["data"]["messageKey"] == "order-9"
    assert request.json["data"]["provider"]["name"] == "sparkpost"


@pytest.mark.parametrize(
    ("config", "field"),
    [({}, "config.username"), ({"username": USERNAME}, "config.password"), ({"password": "pw"}, "config.username"),
     ({"token": ""}, "config.token")],
    ids=["nothing", "no_password", "no_username", "empty_token"],
)  # fmt: skip
async def test_a_sparkpost_source_needs_basic_auth_or_a_token(api, config, field):
    status, body = await api.post("/v1/sources", {"name": "sp", "provider": "sparkpost", "config": config})
    assert status == 400 and body["error"]["field"] == field, body


async def test_removing_the_last_credential_of_a_sparkpost_source_is_refused(api, source):
    src, _ = source
    status, body = await api.patch(f"/v1/sources/{src['sourceId']}", {"config": {"username": None, "password": None}})
    assert status == 400 and body["error"]["field"] == "config.username", body
