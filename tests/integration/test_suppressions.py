"""The suppression list: a hard bounce or a complaint puts the recipient on the account's list (unless the
account turned that off), later sends to it fail with statusCode 1 naming why, and the list is read, paged
and edited through /v1/suppressions, one account never seeing another's."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher import accounts
from dispatcher.errors import NotFound
from dispatcher.runtime import create_app
from dispatcher.sending import service
from dispatcher.sending.sender import suppressed_reason
from tests.conftest import Api, make_key, wait_until
from tests.integration.test_smtp_transport import free_port

SEND = {"from": "shop@example.com", "subject": "s", "text": "hi"}


def bounced(recipient: str, bounce_type: str = "hard", key: str = "m-1") -> dict[str, Any]:
    return {"type": "bounced", "messageKey": key, "recipient": recipient, "data": {"bounceType": bounce_type}}


def complained(recipient: str, key: str = "m-1") -> dict[str, Any]:
    return {"type": "complained", "messageKey": key, "recipient": recipient}


async def record(api: Api, *events: dict[str, Any]) -> list[dict[str, Any]]:
    status, body = await api.post("/v1/events", {"events": list(events)})
    assert status == 201, body
    return body["events"]


async def listed(api: Api, query: str = "") -> list[str]:
    status, body = await api.get(f"/v1/suppressions{query}")
    assert status == 200, body
    return [s["address"] for s in body["suppressions"]]


@pytest.fixture
async def send_api(database, settings, aiohttp_client, smtp) -> Api:
    """The app with a sender relaying to the test's SMTP server."""
    _, port = smtp
    http_port = free_port()
    s = settings.model_copy(update={"mail_url": f"smtp://127.0.0.1:{port}?timeout=5",
                                    "public_url": f"http://127.0.0.1:{http_port}", "mail_retry_schedule": [0.3]})  # fmt: skip
    client = await aiohttp_client(create_app(s, database=database), server_kwargs={"port": http_port})
    return Api(client, await make_key(database, "acme"))


async def failure(api: Api, key: str) -> dict[str, Any] | None:
    status, body = await api.get(f"/v1/messages/{key}")
    failed = [e["data"] for e in body.get("events", []) if e["type"] == "failed"] if status == 200 else []
    return failed[0] if failed else None


async def outcome(api: Api, key: str, *types: str) -> list[str]:
    async def done() -> list[str] | None:
        status, body = await api.get(f"/v1/messages/{key}")
        seen = [e["type"] for e in body["events"]] if status == 200 else []
        return seen if any(t in seen for t in types) else None

    return await wait_until(done)


# --- what suppresses an address ---------------------------------------------------------------------


async def test_a_hard_bounce_suppresses_the_recipient_with_reason_and_event(api: Api):
    [event] = await record(api, bounced("Ann@Example.com"))
    status, body = await api.get("/v1/suppressions/ann@example.com")
    assert status == 200, body
    assert body["address"] == "ann@example.com" and body["reason"] == "bounced"
    assert body["eventId"] == event["eventId"] and body["createdAt"]
    assert (await api.get("/v1/suppressions/ANN@example.COM"))[1] == body  # looked up in lower case


async def test_a_soft_bounce_does_not_suppress(api: Api):
    await record(api, bounced("ann@example.com", "soft"))
    assert (await api.get("/v1/suppressions/ann@example.com"))[0] == 404
    assert await listed(api) == []


async def test_a_complaint_suppresses_the_recipient(api: Api):
    [event] = await record(api, complained("bob@example.com"))
    status, body = await api.get("/v1/suppressions/bob@example.com")
    assert status == 200 and body["reason"] == "complained" and body["eventId"] == event["eventId"]


async def test_the_first_reason_stays_when_an_address_bounces_after_a_complaint(api: Api):
    [first] = await record(api, complained("bob@example.com"))
    await record(api, bounced("bob@example.com", key="m-2"))
    body = (await api.get("/v1/suppressions/bob@example.com"))[1]
    assert (body["reason"], body["eventId"]) == ("complained", first["eventId"])


async def test_an_event_without_a_recipient_suppresses_nothing(api: Api, database):
    await record(api, {"type": "complained", "messageKey": "m-1"})
    assert await database.pool.fetchval("SELECT count(*) FROM suppressions") == 0


async def test_with_the_account_setting_off_nothing_is_suppressed(api: Api, database):
    async with database.pool.acquire() as conn:
        row = await accounts.set_suppress_on_bounce(conn, "acme", False)
    assert row["suppress_on_bounce"] is False
    await record(api, bounced("ann@example.com"), complained("bob@example.com"))
    assert await database.pool.fetchval("SELECT count(*) FROM suppressions") == 0
    async with database.pool.acquire() as conn:
        await accounts.set_suppress_on_bounce(conn, "acme", True)
    await record(api, bounced("ann@example.com", key="m-2"))
    assert await listed(api) == ["ann@example.com"]


async def test_turning_the_setting_off_for_an_unknown_account_is_not_found(database):
    async with database.pool.acquire() as conn:
        with pytest.raises(NotFound):
            await accounts.set_suppress_on_bounce(conn, "nobody", False)


# --- sending to a suppressed address ----------------------------------------------------------------


async def test_a_later_send_fails_with_status_code_1_naming_the_reason_unless_send_to_unsubscribed(send_api: Api, smtp):
    await record(send_api, bounced("ann@example.com"), complained("bob@example.com"))
    for key, to in (("to-ann", "Ann@example.com"), ("to-bob", "bob@example.com")):
        assert (await send_api.post(f"/v1/messages/{key}", {**SEND, "recipient": {"to": to}}))[0] == 202
    await outcome(send_api, "to-ann", "failed")
    await outcome(send_api, "to-bob", "failed")
    ann, bob = await failure(send_api, "to-ann"), await failure(send_api, "to-bob")
    assert ann == {"statusCode": 1, "reason": "recipient is on the suppression list (bounced)"}
    assert bob == {"statusCode": 1, "reason": "recipient is on the suppression list (complained)"}

    send = {**SEND, "recipient": {"to": "ann@example.com"}, "sendToUnsubscribed": True}
    assert (await send_api.post("/v1/messages/to-ann-anyway", send))[0] == 202
    assert "sent" in await outcome(send_api, "to-ann-anyway", "sent", "failed")
    assert [r.rcpt_tos for r in smtp[0].received] == [["ann@example.com"]]


async def test_a_hard_bounce_from_the_relay_suppresses_the_next_send(send_api: Api, smtp):
    smtp[0].rcpt_replies["gone@example.com"] = "550 5.1.1 no such user"
    await send_api.post("/v1/messages/b-1", {**SEND, "recipient": {"to": "gone@example.com"}})
    await outcome(send_api, "b-1", "bounced")
    assert (await send_api.get("/v1/suppressions/gone@example.com"))[1]["reason"] == "bounced"
    await send_api.post("/v1/messages/b-2", {**SEND, "recipient": {"to": "gone@example.com"}})
    await outcome(send_api, "b-2", "failed")
    assert (await failure(send_api, "b-2")) == {
        "statusCode": 1, "reason": "recipient is on the suppression list (bounced)"
    }  # fmt: skip


async def test_an_unsubscribed_recipient_keeps_its_reason(database):
    async with database.pool.acquire() as conn:
        account = (await accounts.create_account(conn, "acme"))["id"]
        await conn.execute(service.SQL["suppress"], account, "ann@example.com", "unsubscribed")
        [row] = await conn.fetch(service.SQL["suppressed"], [account], ["ann@example.com"])
    assert suppressed_reason(row["reason"]) == "recipient is unsubscribed"


# --- the API ----------------------------------------------------------------------------------------


async def test_listing_filters_by_reason_address_prefix_and_time(api: Api, database):
    await record(api, bounced("ann@example.com"), complained("bob@example.com"), bounced("anna@example.org"))
    async with database.pool.acquire() as conn:
        account = await conn.fetchval("SELECT id FROM accounts WHERE name = 'acme'")
        await conn.execute(service.SQL["suppress"], account, "cid@example.com", "unsubscribed")

    assert await listed(api) == ["ann@example.com", "bob@example.com", "anna@example.org", "cid@example.com"]
    assert await listed(api, "?reason=bounced") == ["ann@example.com", "anna@example.org"]
    assert await listed(api, "?reason=unsubscribed") == ["cid@example.com"]
    assert await listed(api, "?addressPrefix=ANN") == ["ann@example.com", "anna@example.org"]
    assert await listed(api, "?addressPrefix=ann%40&reason=bounced") == ["ann@example.com"]
    created = (await api.get("/v1/suppressions/ann@example.com"))[1]["createdAt"].replace("+", "%2B")
    assert len(await listed(api, f"?since={created}")) == 4
    assert await listed(api, f"?until={created}") == []
    status, body = await api.get("/v1/suppressions?reason=bounce")
    assert status == 400 and body["error"]["field"] == "reason"


async def test_keyset_paging_walks_every_suppression_once(api: Api):
    addresses = [f"u{i}@example.com" for i in range(7)]
    await record(api, *(bounced(a, key=f"m-{i}") for i, a in enumerate(addresses)))
    seen, cursor, pages = [], "", 0
    while True:
        status, body = await api.get(f"/v1/suppressions?limit=3{cursor}")
        assert status == 200, body
        seen += [s["address"] for s in body["suppressions"]]
        pages += 1
        if body["nextCursor"] is None:
            break
        cursor = f"&cursor={body['nextCursor']}"
    assert seen == addresses and pages == 3
    assert (await api.get("/v1/suppressions?cursor=abc"))[0] == 400


async def test_delete_takes_an_address_off_the_list(api: Api):
    await record(api, bounced("ann@example.com"))
    assert (await api.delete("/v1/suppressions/Ann@Example.com"))[0] == 204
    assert (await api.get("/v1/suppressions/ann@example.com"))[0] == 404
    status, body = await api.delete("/v1/suppressions/ann@example.com")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_another_accounts_suppressions_are_not_found_exactly_like_missing_ones(api: Api, other_api: Api):
    await record(api, bounced("ann@example.com"))
    missing = await other_api.get("/v1/suppressions/nobody@example.com")
    assert await other_api.get("/v1/suppressions/ann@example.com") == missing
    assert missing[0] == 404
    assert (await other_api.delete("/v1/suppressions/ann@example.com"))[0] == 404
    assert await listed(other_api) == []
    assert (await api.get("/v1/suppressions/ann@example.com"))[0] == 200  # still there for its own account


async def test_reading_needs_events_read_and_deleting_needs_messages_send(api: Api, database):
    await record(api, bounced("ann@example.com"))
    writer = await make_key(database, "acme", ["events:write", "messages:send"])
    reader = await make_key(database, "acme", ["events:read"])
    assert (await api.get("/v1/suppressions", key=writer))[0] == 403
    assert (await api.get("/v1/suppressions/ann@example.com", key=writer))[0] == 403
    status, body = await api.delete("/v1/suppressions/ann@example.com", key=reader)
    assert status == 403 and body["error"]["code"] == "forbidden"
    assert (await api.get("/v1/suppressions/ann@example.com", key=reader))[0] == 200
    assert (await api.delete("/v1/suppressions/ann@example.com", key=writer))[0] == 204
