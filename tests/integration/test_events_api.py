"""Event ingest and history over real HTTP against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from tests.conftest import Api, make_key, wait_until


async def count_events(database) -> int:
    return await database.pool.fetchval("SELECT count(*) FROM events")


async def test_single_event_is_recorded_and_returned_with_its_id(api: Api):
    status, body = await api.post("/v1/events", {"type": "sent", "messageKey": "m-1", "recipient": "a@example.com"})
    assert status == 201
    assert body["eventId"].startswith("evt_")
    assert body["type"] == "sent" and body["messageKey"] == "m-1" and body["recipient"] == "a@example.com"
    assert body["occurredAt"] and body["recordedAt"]


async def test_answer_comes_after_commit_so_the_event_is_immediately_readable(api: Api, database):
    status, body = await api.post("/v1/events", {"type": "queued", "messageKey": "m-2"})
    assert status == 201
    row = await database.pool.fetchrow("SELECT type, message_key FROM events WHERE id = $1", int(body["eventId"][4:]))
    assert tuple(row) == ("queued", "m-2")


async def test_batch_of_events_is_recorded_in_order(api: Api):
    events = [{"type": "queued", "messageKey": f"k{i}"} for i in range(50)]
    status, body = await api.post("/v1/events", {"events": events})
    assert status == 201 and body["created"] == 50
    assert [e["messageKey"] for e in body["events"]] == [f"k{i}" for i in range(50)]


async def test_resending_an_event_id_is_idempotent_and_answers_the_original(api: Api, database):
    event = {"id": "client-1", "type": "sent", "messageKey": "m-3"}
    s1, first = await api.post("/v1/events", event)
    s2, again = await api.post("/v1/events", {**event, "occurredAt": "2020-01-01T00:00:00Z"})
    assert (s1, s2) == (201, 200)
    assert again == first
    assert await count_events(database) == 1


async def test_an_event_id_is_remembered_for_the_three_days_before_today_and_not_longer(api: Api, database):
    """History is partitioned by day: an id recorded 3 days ago still deduplicates, one recorded 4 days
    ago is no longer looked for (both older than 72 hours only on the last day)."""
    from datetime import timedelta

    from dispatcher import partitions

    for key, days in (("three", 3), ("four", 4)):
        status, _ = await api.post("/v1/events", {"type": "sent", "messageKey": key, "id": f"id-{key}"})
        assert status == 201
        async with database.pool.acquire() as conn:
            await partitions.ensure(conn, start=partitions.today() - timedelta(days=days), days=1)
            await conn.execute(
                "UPDATE events SET recorded_at = recorded_at - make_interval(days => $2) WHERE client_id = $1",
                f"id-{key}", days,
            )  # fmt: skip
    for key in ("three", "four"):
        await api.post("/v1/events", {"type": "sent", "messageKey": key, "id": f"id-{key}"})
    counts = dict(await database.pool.fetch("SELECT client_id, count(*) FROM events GROUP BY client_id"))
    assert counts == {"id-three": 1, "id-four": 2}


async def test_an_event_more_than_a_day_ahead_of_the_clock_is_refused(api: Api, database):
    from datetime import UTC, datetime, timedelta

    ahead = (datetime.now(UTC) + timedelta(days=1, minutes=5)).isoformat()
    status, body = await api.post("/v1/events", {"type": "sent", "messageKey": "m", "occurredAt": ahead})
    assert status == 400 and "ahead" in body["error"]["message"], body
    soon = (datetime.now(UTC) + timedelta(hours=23)).isoformat()
    assert (await api.post("/v1/events", {"type": "sent", "messageKey": "m", "occurredAt": soon}))[0] == 201
    assert await count_events(database) == 1


async def test_batch_with_known_and_repeated_ids_stores_each_once(api: Api, database):
    await api.post("/v1/events", {"id": "a", "type": "sent", "messageKey": "m"})
    status, body = await api.post(
        "/v1/events",
        {"events": [{"id": "a", "type": "sent", "messageKey": "m"}, {"type": "opened", "messageKey": "m"},
                    {"id": "b", "type": "clicked", "messageKey": "m", "data": {"url": "https://x"}},
                    {"id": "b", "type": "clicked", "messageKey": "m", "data": {"url": "https://x"}}]},
    )  # fmt: skip
    assert status == 201 and body["created"] == 2
    ids = [e["eventId"] for e in body["events"]]
    assert ids[2] == ids[3] and len(set(ids)) == 3
    assert await count_events(database) == 3


async def test_concurrent_posts_of_the_same_event_id_store_it_once(api: Api, database):
    event = {"id": "race", "type": "sent", "messageKey": "m"}
    results = await asyncio.gather(*(api.post("/v1/events", event) for _ in range(10)))
    assert {r[1]["eventId"] for r in results} == {results[0][1]["eventId"]}
    assert await count_events(database) == 1


async def test_one_invalid_event_rejects_the_whole_batch_naming_index_and_field(api: Api, database):
    events = [{"type": "sent", "messageKey": "ok"}] * 3 + [{"type": "bounced", "messageKey": "x", "data": {}}]
    status, body = await api.post("/v1/events", {"events": events})
    assert status == 400
    assert body["error"]["field"] == "events[3].data.bounceType"
    assert await count_events(database) == 0


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"type": "nope", "messageKey": "m"}, "type"),
        ({"messageKey": "m"}, "type"),
        ({"type": "sent"}, "messageKey"),
        ({"type": "sent", "messageKey": ""}, "messageKey"),
        ({"type": "sent", "messageKey": "x" * 101}, "messageKey"),
        ({"type": "sent", "messageKey": "m", "id": "x" * 101}, "id"),
        ({"type": "sent", "messageKey": "m", "surprise": 1}, "surprise"),
        ({"type": "sent", "messageKey": "m", "occurredAt": "yesterday"}, "occurredAt"),
        ({"type": "sent", "messageKey": "m", "occurredAt": "2026-01-01T00:00:00"}, "occurredAt"),
        ({"type": "sent", "messageKey": "m", "data": [1]}, "data"),
        ({"type": "bounced", "messageKey": "m", "data": {"bounceType": "medium"}}, "data.bounceType"),
        (
            {"type": "bounced", "messageKey": "m", "data": {"bounceType": "hard", "smtpCode": "x"}},
            "data.smtpCode",
        ),
        ({"type": "clicked", "messageKey": "m", "data": {}}, "data.url"),
        ({"type": "clicked", "messageKey": "m"}, "data"),
        ({"type": "failed", "messageKey": "m", "data": {"statusCode": 500}}, "data.reason"),
        ({"type": "opened", "messageKey": "m", "data": {"userAgent": 5}}, "data.userAgent"),
        ({"type": "sent", "messageKey": "nul\u0000byte"}, "messageKey"),
        ({"type": "sent", "messageKey": "m", "data": {"k": "nul\u0000"}}, "data.k"),
    ],
)
async def test_invalid_event_is_rejected_with_the_field_named(api: Api, database, event, field):
    status, body = await api.post("/v1/events", event)
    assert status == 400, body
    assert body["error"]["field"] == field
    assert body["error"]["code"] and body["error"]["message"]
    assert await count_events(database) == 0


async def test_typed_event_data_is_stored(api: Api):
    data = {"bounceType": "hard", "smtpCode": 550, "reason": "no such user", "extra": {"mx": "a"}}
    status, body = await api.post("/v1/events", {"type": "bounced", "messageKey": "m", "data": data})
    assert status == 201 and body["data"] == data


async def test_batch_size_is_limited_to_1000(api: Api):
    status, body = await api.post("/v1/events", {"events": [{"type": "sent", "messageKey": "m"}] * 1001})
    assert status == 400 and body["error"]["field"] == "events"
    status, _ = await api.post("/v1/events", {"events": []})
    assert status == 400


# --- history ---------------------------------------------------------------------------------


async def test_message_timeline_lists_events_oldest_first_with_status(api: Api):
    for t, at in [
        ("sent", "2026-01-01T10:00:01Z"),
        ("queued", "2026-01-01T10:00:00Z"),
        ("delivered", "2026-01-01T10:00:05Z"),
    ]:
        await api.post("/v1/events", {"type": t, "messageKey": "order-7", "occurredAt": at})
    status, body = await api.get("/v1/messages/order-7")
    assert status == 200
    assert [e["type"] for e in body["events"]] == ["queued", "sent", "delivered"]
    assert body["status"] == "delivered"
    assert body["firstEventAt"].startswith("2026-01-01T10:00:00")
    assert body["lastEventAt"].startswith("2026-01-01T10:00:05")


async def test_later_open_does_not_hide_an_earlier_bounce(api: Api):
    await api.post("/v1/events", {"type": "sent", "messageKey": "b"})
    await api.post("/v1/events", {"type": "bounced", "messageKey": "b", "data": {"bounceType": "hard"}})
    await api.post("/v1/events", {"type": "opened", "messageKey": "b"})
    _, body = await api.get("/v1/messages/b")
    assert body["status"] == "bounced"


async def test_unknown_message_is_404(api: Api):
    status, body = await api.get("/v1/messages/never-seen")
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_events_filter_by_type_message_definition_and_time(api: Api):
    await api.post("/v1/events", {"events": [
        {"type": "sent", "messageKey": "a", "definitionKey": "welcome", "occurredAt": "2026-01-01T00:00:00Z"},
        {"type": "opened", "messageKey": "a", "definitionKey": "welcome", "occurredAt": "2026-01-02T00:00:00Z"},
        {"type": "sent", "messageKey": "b", "definitionKey": "reset", "occurredAt": "2026-01-03T00:00:00Z"},
        {"type": "clicked", "messageKey": "b", "data": {"url": "https://x"}, "occurredAt": "2026-01-04T00:00:00Z"},
    ]})  # fmt: skip

    async def keys(query: str) -> list[tuple[str, str]]:
        status, body = await api.get("/v1/events?" + query)
        assert status == 200, body
        return [(e["type"], e["messageKey"]) for e in body["events"]]

    assert await keys("type=sent") == [("sent", "a"), ("sent", "b")]
    assert await keys("type=sent&type=clicked") == [("sent", "a"), ("sent", "b"), ("clicked", "b")]
    assert await keys("messageKey=a") == [("sent", "a"), ("opened", "a")]
    assert await keys("definitionKey=reset") == [("sent", "b")]
    assert await keys("since=2026-01-02T00:00:00Z&until=2026-01-04T00:00:00Z") == [
        ("opened", "a"),
        ("sent", "b"),
    ]


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("limit=1001", "limit"), ("type=bogus", "type"), ("cursor=zzz", "cursor"),
     ("since=notadate", "since"),
     ("what=1", "what")],
)  # fmt: skip
async def test_invalid_history_query_is_400_naming_the_parameter(api: Api, query, field):
    status, body = await api.get("/v1/events?" + query)
    assert status == 400 and body["error"]["field"].startswith(field)


async def test_paging_during_concurrent_inserts_returns_every_existing_event_exactly_once(api: Api):
    await api.post("/v1/events", {"events": [{"type": "sent", "messageKey": f"p{i}"} for i in range(230)]})
    seen: list[str] = []
    cursor = None
    writer_done = asyncio.Event()

    async def writer():
        for i in range(20):
            await api.post(
                "/v1/events", {"events": [{"type": "opened", "messageKey": f"new{i}-{j}"} for j in range(5)]}
            )
        writer_done.set()

    task = asyncio.create_task(writer())
    while True:
        status, body = await api.get("/v1/events?limit=25" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200
        seen += [e["messageKey"] for e in body["events"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    await task
    original = [k for k in seen if k.startswith("p")]
    assert original == [f"p{i}" for i in range(230)]
    assert len(seen) == len(set(seen))


# --- tenancy, keys, errors --------------------------------------------------------------------


async def test_another_account_cannot_list_or_fetch_the_first_accounts_events(api: Api, other_api: Api):
    await api.post("/v1/events", {"type": "sent", "messageKey": "secret-order", "id": "evt-a"})
    _, listing = await other_api.get("/v1/events")
    assert listing["events"] == []
    status, _ = await other_api.get("/v1/messages/secret-order")
    assert status == 404
    # the same client id in another account is a different event
    status, body = await other_api.post("/v1/events", {"type": "sent", "messageKey": "mine", "id": "evt-a"})
    assert status == 201 and body["messageKey"] == "mine"


async def test_missing_and_invalid_keys_are_401(api: Api, app_client):
    resp = await app_client.get("/v1/events")
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "unauthorized"
    status, _ = await api.get("/v1/events", key="dk_not-a-real-key")
    assert status == 401


async def test_revoked_key_is_refused_as_soon_as_the_revocation_notice_arrives(api: Api, database):
    """Keys are cached per process; revocation reaches every cache through NOTIFY before the next request."""
    from dispatcher import accounts

    key = await make_key(database, "acme", ["events:read"])
    assert (await api.get("/v1/events", key=key))[0] == 200
    assert (await api.get("/v1/events", key=key))[0] == 200  # now served from the cache
    key_id = await database.pool.fetchval("SELECT id FROM api_keys WHERE key_hash = $1", accounts.hash_key(key))
    async with database.pool.acquire() as conn:
        assert await accounts.revoke_key(conn, key_id)

    async def refused():
        return (await api.get("/v1/events", key=key))[0] == 401

    await wait_until(refused, timeout=5, interval=0.01)


async def test_key_without_the_scope_is_403(api: Api, database):
    reader = await make_key(database, "acme", ["events:read"])
    status, body = await api.post("/v1/events", {"type": "sent", "messageKey": "m"}, key=reader)
    assert status == 403 and "events:write" in body["error"]["message"]
    writer = await make_key(database, "acme", ["events:write"])
    assert (await api.get("/v1/events", key=writer))[0] == 403
    assert (await api.post("/v1/events", {"type": "sent", "messageKey": "m"}, key=writer))[0] == 201


async def test_key_restricted_to_other_networks_is_403_from_here(api: Api, database):
    elsewhere = await make_key(database, "acme", ["*"], ["10.0.0.0/8"])
    status, body = await api.get("/v1/events", key=elsewhere)
    assert status == 403 and body["error"]["code"] == "forbidden"
    here = await make_key(database, "acme", ["*"], ["10.0.0.0/8", "127.0.0.0/8"])
    assert (await api.get("/v1/events", key=here))[0] == 200


async def test_keys_are_stored_only_as_hashes(api: Api, database):
    rows = await database.pool.fetch("SELECT key_hash, prefix FROM api_keys")
    for row in rows:
        assert api.key.encode() not in bytes(row["key_hash"])
        assert len(row["prefix"]) < 12


async def test_a_keys_last_use_is_recorded_in_the_background_without_a_write_per_request(
    api: Api, other_api: Api, database
):
    async def last_used(name: str):
        return tuple(await database.pool.fetchrow(
            "SELECT k.last_used_at, k.xmin::text FROM api_keys k JOIN accounts a ON a.id = k.account_id"
            " WHERE a.name = $1", name))  # fmt: skip

    assert (await last_used("acme"))[0] is None
    await api.get("/v1/events")  # looked up in the database: noted in the background

    async def noted():
        return (await last_used("acme"))[0] is not None

    await wait_until(noted)
    used, version = await last_used("acme")
    await api.get("/v1/events")
    await api.get("/v1/events")
    assert await last_used("acme") == (used, version)  # the cached key is not written again
    assert (await last_used("globex"))[0] is None  # a key never used says so


async def test_body_that_is_not_json_is_400_and_wrong_content_type_415(api: Api):
    h = {"Authorization": f"Bearer {api.key}"}
    resp = await api.client.post("/v1/events", data=b"{not json", headers={**h, "Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"
    resp = await api.client.post("/v1/events", data=b"type=sent", headers={**h, "Content-Type": "text/plain"})
    assert resp.status == 415 and (await resp.json())["error"]["code"] == "unsupported_media_type"


async def test_body_over_the_limit_is_413(api: Api):
    big = json.dumps({"type": "sent", "messageKey": "m", "data": {"blob": "x" * (1024 * 1024 + 10)}}).encode()
    headers = {"Authorization": f"Bearer {api.key}", "Content-Type": "application/json"}
    resp = await api.client.post("/v1/events", data=io.BytesIO(big), headers=headers)
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "payload_too_large"


async def test_unknown_route_is_404_and_wrong_method_is_405_as_json(api: Api):
    status, body = await api.get("/v1/nothing-here")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = await api.call("PUT", "/v1/events")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"


async def test_rate_limit_answers_429_with_retry_after(database, settings, aiohttp_client):
    from dispatcher.runtime import create_app

    client = await aiohttp_client(
        create_app(settings.model_copy(update={"rate_limit_per_second": 2}), database=database)
    )
    key = await make_key(database, "acme")
    statuses = []
    for _ in range(6):
        resp = await client.get("/v1/events", headers={"Authorization": f"Bearer {key}"})
        statuses.append(resp.status)
        if resp.status == 429:
            assert int(resp.headers["Retry-After"]) >= 1
            assert (await resp.json())["error"]["code"] == "rate_limited"
    assert 429 in statuses and statuses[0] == 200


async def test_every_response_carries_a_request_id(api: Api):
    resp = await api.client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert resp.headers["X-Request-Id"] == "abc-123"
    resp = await api.client.get("/v1/events")
    assert len(resp.headers["X-Request-Id"]) == 32


async def test_health_and_readiness_need_no_key(app_client):
    assert (await app_client.get("/healthz")).status == 200
    resp = await app_client.get("/readyz")
    assert resp.status == 200 and (await resp.json())["status"] == "ok"


async def test_openapi_document_covers_every_route(app_client):
    resp = await app_client.get("/openapi.json")
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    registered = {
        (r.method.lower(), r.resource.canonical)
        for r in app_client.app.router.routes()
        if r.method != "HEAD" and r.resource.canonical != "/openapi.json"
        and not r.resource.canonical.startswith(("/console", "/portal/"))  # HTML pages, not the API
    }  # fmt: skip
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert registered == documented
    body = doc["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "anyOf" in body or "oneOf" in body


# --- group commit: concurrent requests share a statement and a commit -----------------------------


async def test_concurrent_posts_from_two_accounts_each_get_their_own_events(api: Api, other_api: Api, database):
    posts = [(a, {"id": "same-id", "type": "sent", "messageKey": f"{n}-{i}"})
             for i in range(15) for a, n in ((api, "acme"), (other_api, "globex"))]  # fmt: skip
    results = await asyncio.gather(*(a.post("/v1/events", body) for a, body in posts))
    for name, client in (("acme", api), ("globex", other_api)):
        answers = [body for (a, _), (_, body) in zip(posts, results, strict=True) if a is client]
        statuses = sorted(s for (a, _), (s, _) in zip(posts, results, strict=True) if a is client)
        assert statuses == [200] * 14 + [201]  # the id is stored once per account, whoever came first
        assert {b["eventId"] for b in answers} == {answers[0]["eventId"]}
        [creator] = [body for (a, body), (s, _) in zip(posts, results, strict=True) if a is client and s == 201]
        assert answers[0]["messageKey"] == creator["messageKey"]  # 201 went to the request that stored it
        assert answers[0]["messageKey"].startswith(name)
        _, listed = await client.get("/v1/events")
        assert [e["eventId"] for e in listed["events"]] == [answers[0]["eventId"]]


async def writer_with(database, requests):
    from dispatcher.events import record_groups
    from dispatcher.group_commit import GroupWriter

    writer = GroupWriter(database.pool, record_groups, max_items=1000)
    try:
        return await asyncio.gather(*(writer.write(r, items=len(r[1])) for r in requests), return_exceptions=True)
    finally:
        await writer.aclose()


async def test_requests_arriving_together_are_committed_together(api: Api, database):
    from dispatcher.events import NewEvent

    account = await database.pool.fetchval("SELECT id FROM accounts WHERE name = 'acme'")
    requests = [(account, [NewEvent("sent", f"m-{i}", {"n": i})]) for i in range(40)]
    results = await writer_with(database, requests)
    assert [rows[0]["message_key"] for rows, _ in results] == [f"m-{i}" for i in range(40)]
    assert all(created == 1 for _, created in results)
    # rows one transaction wrote carry its id: far fewer transactions than requests
    commits = await database.pool.fetchval("SELECT count(DISTINCT xmin::text) FROM events")
    assert commits <= 4


async def test_one_failing_request_does_not_fail_the_others_in_its_group(api: Api, database):
    import asyncpg

    from dispatcher.events import NewEvent

    account = await database.pool.fetchval("SELECT id FROM accounts WHERE name = 'acme'")
    refused = NewEvent("sent", None, {})  # type: ignore[arg-type]  # a messageKey the table refuses (NOT NULL)
    requests = [(account, [refused if i == 7 else NewEvent("sent", f"m-{i}", {})]) for i in range(20)]
    results = await writer_with(database, requests)
    assert isinstance(results[7], asyncpg.NotNullViolationError)
    stored = [r for i, r in enumerate(results) if i != 7]
    assert all(created == 1 for _, created in stored)
    assert await count_events(database) == 19
