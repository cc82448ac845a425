"""Brevo's transactional email webhooks into a source: one event per request, or a batched array, shaped as
Brevo's documentation shows them, authenticated by the notify URL's basic auth credentials or the webhook's
bearer token; each refusal stores nothing."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import orjson
import pytest

from tests.conftest import Api, setup_callback
from tests.integration.sources import event_count, source_post

USERNAME = "brevo-hook"
MESSAGE_ID = "<202312211546.94160606300@smtp-relay.mailin.fr>"


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def brevo_event(name: str, n: int = 0, key: str = "order-1", **extra: Any) -> dict[str, Any]:
    ts = int(time.time()) - 20 + n
    return {
        "event": name,
        "email": "ann@example.com",
        "id": 1636105,  # the webhook's id
        "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)),
        "ts": ts,
        "message-id": MESSAGE_ID,
        "ts_event": ts,
        "subject": "My first Transactional",
        "X-Mailin-custom": key,
        "sending_ip": "185.41.28.109",
        "ts_epoch": ts * 1000 + 321,
        "template_id": 22,
        "tags": ["transac_messages"],
        "contact_id": 8,
        **extra,
    }


READER = {"user_agent": "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0", "device_used": "DESKTOP",
          "ip": "203.0.113.9"}  # fmt: skip


def brevo_events(key: str = "order-1") -> list[dict[str, Any]]:
    return [
        brevo_event("request", 0, key),
        brevo_event("delivered", 1, key),
        brevo_event("opened", 2, key, **READER),
        brevo_event("click", 3, key, link="https://example.com/pricing", **READER),
        brevo_event("hard_bounce", 4, key, reason="550 5.1.1 The email account that you tried to reach does not exist"),
        brevo_event("spam", 5, key),
        brevo_event("unsubscribed", 6, key),
    ]


@pytest.fixture
async def source(api: Api) -> tuple[dict[str, Any], str]:
    password = secrets.token_urlsafe(24)
    config = {"username": USERNAME, "password": password}
    status, body = await api.post("/v1/sources", {"name": "brevo", "provider": "brevo", "config": config})
    assert status == 201, body
    return body, password


async def post_each(api: Api, src: dict[str, Any], headers: dict[str, str], events: list[Any]) -> list[Any]:
    answers = []
    for raw in events:
        status, answer = await source_post(api, src, orjson.dumps(raw), headers)
        assert status == 200, answer
        answers.append(answer)
    return answers


async def test_brevo_events_land_in_the_message_timeline_under_the_x_mailin_custom_key(api, source):
    src, password = source
    answers = await post_each(api, src, basic(USERNAME, password), brevo_events())
    assert all(a == {"received": 1, "recorded": 1, "duplicates": 0, "ignored": 0} for a in answers), answers
    status, msg = await api.get("/v1/messages/order-1")
    assert status == 200, msg
    assert [e["type"] for e in msg["events"]] == ["sent", "delivered", "opened", "clicked", "bounced", "complained",
                                                  "unsubscribed"]  # fmt: skip
    opened, clicked, bounced = msg["events"][2:5]
    assert bounced["data"]["bounceType"] == "hard" and bounced["data"]["smtpCode"] == 550
    assert bounced["data"]["status"] == "5.1.1"
    provider = bounced["data"]["provider"]
    assert provider["name"] == "brevo" and provider["sourceId"] == src["sourceId"]
    assert provider["rawType"] == "hard_bounce" and provider["messageId"] == MESSAGE_ID
    assert provider["smtpMessageId"] == "202312211546.94160606300@smtp-relay.mailin.fr"
    assert provider["eventId"].startswith("sha256:")
    assert bounced["recipient"] == "ann@example.com"
    assert clicked["data"]["url"] == "https://example.com/pricing"
    assert opened["data"]["ipAddress"] == "203.0.113.9" and opened["data"]["userAgent"].startswith("Mozilla")


async def test_a_batched_brevo_webhook_is_accepted(api, source):
    src, password = source
    status, answer = await source_post(api, src, orjson.dumps(brevo_events()), basic(USERNAME, password))
    assert status == 200 and answer == {"received": 7, "recorded": 7, "duplicates": 0, "ignored": 0}, answer
    _, msg = await api.get("/v1/messages/order-1")
    assert len(msg["events"]) == 7


async def test_the_messagekey_can_be_one_part_of_a_name_value_x_mailin_custom(api, source):
    src, password = source
    raw = brevo_event("delivered", key="campaign:spring|messageKey:order-7|user:42")
    await post_each(api, src, basic(USERNAME, password), [raw])
    status, msg = await api.get("/v1/messages/order-7")
    assert status == 200 and [e["type"] for e in msg["events"]] == ["delivered"], msg


async def test_a_retried_brevo_event_is_recorded_once_also_when_it_comes_again_in_a_batch(api, source, database):
    src, password = source
    events = brevo_events()
    [first, retry] = await post_each(api, src, basic(USERNAME, password), [events[4], events[4]])
    assert first["recorded"] == 1 and retry == {"received": 1, "recorded": 0, "duplicates": 1, "ignored": 0}
    [batch] = await post_each(api, src, basic(USERNAME, password), [events])
    assert batch["recorded"] == 6 and batch["duplicates"] == 1, batch
    assert await event_count(database) == 7


async def test_the_bearer_token_authenticates_a_source_configured_with_one(api, database):
    token = secrets.token_urlsafe(24)
    status, src = await api.post("/v1/sources", {"name": "brevo", "provider": "brevo", "config": {"token": token}})
    assert status == 201 and src["config"] == {} and src["secretsSet"] == ["token"], src
    [answer] = await post_each(api, src, bearer(token), [brevo_events()[1]])
    assert answer["recorded"] == 1
    status, answer = await source_post(api, src, orjson.dumps(brevo_events()[2]), bearer(token + "x"))
    assert status == 401, answer
    assert await event_count(database) == 1


@pytest.mark.parametrize("case", ["wrong_password", "wrong_username", "missing", "bearer_not_configured", "malformed"])
async def test_an_unauthentic_brevo_request_is_refused_and_nothing_is_stored(api, source, database, case):
    src, password = source
    headers = {
        "wrong_password": basic(USERNAME, password + "x"),
        "wrong_username": basic("someone-else", password),
        "missing": {"Content-Type": "application/json"},
        "bearer_not_configured": bearer(password),
        "malformed": {"Authorization": "Basic !!!not-base64!!!", "Content-Type": "application/json"},
    }[case]
    status, answer = await source_post(api, src, orjson.dumps(brevo_events()[4]), headers)
    assert status == 401 and answer["error"]["code"] == "unauthorized", answer
    assert password not in answer["error"]["message"]
    assert await event_count(database) == 0


# Brevo event → (our type or None when ignored, bounceType)
MAPPING: list[tuple[str, dict[str, Any], str | None, str | None]] = [
    ("request", brevo_event("request"), "sent", None),
    ("delivered", brevo_event("delivered"), "delivered", None),
    ("deferred", brevo_event("deferred", reason="421 4.7.0 Try again later"), "deferred", None),
    ("hard_bounce", brevo_event("hard_bounce", reason="550 5.1.1 unknown user"), "bounced", "hard"),
    ("soft_bounce", brevo_event("soft_bounce", reason="452 4.2.2 mailbox full"), "bounced", "soft"),
    ("blocked", brevo_event("blocked", reason="blocked : due to blacklist user"), "failed", None),
    ("invalid_email", brevo_event("invalid_email"), "failed", None),
    ("error", brevo_event("error"), "failed", None),
    ("spam", brevo_event("spam"), "complained", None),
    ("opened", brevo_event("opened", **READER), "opened", None),
    ("unique_opened", brevo_event("unique_opened", **READER), "opened", None),
    ("proxy_open", brevo_event("proxy_open", **READER), "opened", None),
    ("unique_proxy_open", brevo_event("unique_proxy_open", **READER), "opened", None),
    ("click", brevo_event("click", link="https://example.com", **READER), "clicked", None),
    ("unsubscribed", brevo_event("unsubscribed"), "unsubscribed", None),
    ("list_addition", brevo_event("list_addition"), None, None),
]


@pytest.mark.parametrize(("raw", "expected", "bounce_type"), [m[1:] for m in MAPPING], ids=[m[0] for m in MAPPING])
async def test_every_brevo_event_is_translated_as_the_mapping_table_says(api, source, raw, expected, bounce_type):
    src, password = source
    [answer] = await post_each(api, src, basic(USERNAME, password), [raw])
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


async def test_a_brevo_event_reaches_a_subscribed_callback(api, source, receiver):
    src, password = source
    await setup_callback(api, receiver, event_types=["bounced"])
    await post_each(api, src, basic(USERNAME, password), brevo_events("order-9"))
    [request] = await receiver.wait_for(1)
    assert request.json["type"] == "bounced" and request.json["data"]["messageKey"] == "order-9"
    assert request.json["data"]["provider"]["name"] == "brevo"


@pytest.mark.parametrize(
    ("config", "field"),
    [({}, "config.username"), ({"username": USERNAME}, "config.password"), ({"password": "pw"}, "config.username")],
    ids=["nothing", "no_password", "no_username"],
)
async def test_a_brevo_source_needs_basic_auth_or_a_token(api, config, field):
    status, body = await api.post("/v1/sources", {"name": "brevo", "provider": "brevo", "config": config})
    assert status == 400 and body["error"]["field"] == field, body
