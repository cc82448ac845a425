"""Payload filters, end to end: events recorded through POST /v1/events reach a real receiver only when
they match the subscription's filter, evaluated by PostgreSQL inside the fan-out; the older form keeps its
meaning; a refused filter is a 400 naming its operator or path."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.filters import compile_filter
from tests.conftest import Api, setup_callback
from tests.receiver import Receiver

# The document the fan-out matches (events.sql, fan): the event's fields (null when absent) and its data.
DOC = {
    "type": "bounced",
    "messageKey": "m-1",
    "definitionKey": "receipt",
    "recipient": "ann@example.com",
    "occurredAt": "2030-01-01T09:00:00.5+00:00",
    "data": {
        "bounceType": "hard",
        "order": {"total": 120.5, "items": 3, "tags": ["vip", "eu"]},
        "at": "2030-01-01T09:00:00Z",
        "atMs": "2030-01-01T09:00:00.250Z",
        "atOffset": "2030-01-01T10:00:00+01:00",
        "naive": "2030-01-01T09:00:00",
        "odd": 'say "hi" \\ back\\slash é 😀 \u2028',
        "none": None,
        "flag": False,
    },
}

TRUTH = [
    ({"type": "bounced"}, True),
    ({"type": "sent"}, False),
    ({"bounceType": "hard"}, True),  # the older form: a field of data
    ({"data.bounceType": "soft"}, False),
    ({"data.order.total": 120.5}, True),
    ({"data.order.tags": "vip"}, True),  # a list matches when one item does
    ({"data.order.items": {"$gt": 2, "$lte": 3}}, True),
    ({"data.order.items": {"$lt": 3}}, False),
    ({"data.order.total": {"$gte": 121}}, False),
    ({"data.bounceType": {"$gt": 1}}, False),  # unlike types never match
    ({"data.bounceType": {"$not": {"$gt": 1}}}, True),  # ... so their negation does
    ({"type": {"$in": ["sent", "bounced"]}}, True),
    ({"type": {"$nin": ["sent", "bounced"]}}, False),
    ({"data.order.items": {"$nin": ["3"]}}, True),
    ({"data.order.items": {"$ne": 3}}, False),
    ({"recipient": {"$exists": True}}, True),
    ({"definitionKey": {"$exists": False}}, False),
    ({"data.missing": {"$exists": False}}, True),
    ({"data.none": {"$exists": True}}, True),
    ({"data.missing": {"$ne": 1}}, True),
    ({"data.flag": False}, True),
    ({"$or": [{"type": "sent"}, {"data.order.items": 3}]}, True),
    ({"$and": [{"type": "bounced"}, {"data.order.items": 4}]}, False),
    ({"$not": {"type": "sent"}}, True),
    ({"$not": {"$or": [{"type": "sent"}, {"type": "bounced"}]}}, False),
    ({"occurredAt": {"$gt": "2030-01-01T09:00:00Z"}}, True),
    ({"occurredAt": {"$gt": "2030-01-01T10:00:00.6+01:00"}}, False),
    ({"data.at": {"$gte": "2030-01-01T09:00:00Z", "$lt": "2030-01-01T09:00:01Z"}}, True),  # Z, no fraction
    ({"data.at": {"$gt": "2030-01-01T09:00:00Z"}}, False),
    ({"data.atMs": {"$gt": "2030-01-01T09:00:00.2Z", "$lt": "2030-01-01T09:00:00.3Z"}}, True),  # Z, fraction
    ({"data.atOffset": {"$lte": "2030-01-01T09:00:00Z", "$gte": "2030-01-01T08:59:59Z"}}, True),  # offset
    ({"data.naive": {"$gt": "2000-01-01T00:00:00Z"}}, False),  # no offset: not a time, and no error
    ({"data.bounceType": {"$lt": "2030-01-01T00:00:00Z"}}, False),  # not a time at all
    ({"data.odd": 'say "hi" \\ back\\slash é 😀 \u2028'}, True),  # escaped exactly
    ({"data.odd": '") || true || ("'}, False),  # text stays a literal
    ({'data.a"b\\c': {"$exists": True}}, False),
]


@pytest.mark.parametrize(("filters", "matches"), TRUTH)
async def test_each_operator_matches_in_postgresql_as_documented(database, filters: dict, matches: bool):
    path = compile_filter(filters)
    got = await database.pool.fetchval("SELECT $1::jsonb @@ $2::text::jsonpath", DOC, path)
    assert got is True if matches else got is not True, path


async def post(api: Api, key: str, type_: str = "delivered", **extra: Any) -> None:
    status, body = await api.post("/v1/events", {"type": type_, "messageKey": key, **extra})
    assert status == 201, body


async def fanned_out(database) -> list[str]:
    """The events that have a delivery: all a worker could ever send (fan-out happens as events are recorded)."""
    rows = await database.pool.fetch(
        "SELECT e.message_key FROM (SELECT event_id FROM queue UNION ALL SELECT event_id FROM deliveries) d"
        " JOIN events e ON e.id = d.event_id ORDER BY e.id"
    )
    return [r["message_key"] for r in rows]


CASES = {
    "equality and a data path": (
        {"type": "bounced", "data.bounceType": "hard"},
        [("a", "bounced", {"data": {"bounceType": "soft"}}), ("b", "delivered", {"data": {"bounceType": "hard"}}),
         ("c", "bounced", {"data": {"bounceType": "hard"}})],
        ["c"],
    ),
    "$in and $nin": (
        {"type": {"$in": ["opened", "clicked"]}, "definitionKey": {"$nin": ["promo"]}},
        [("a", "opened", {"definitionKey": "promo"}), ("b", "sent", {}), ("c", "clicked", {"definitionKey": "receipt", "data": {"url": "https://x"}}),
         ("d", "opened", {})],
        ["c", "d"],
    ),
    "$exists": (
        {"definitionKey": {"$exists": False}, "data.order": {"$exists": True}},
        [("a", "sent", {"definitionKey": "x", "data": {"order": 1}}), ("b", "sent", {"data": {}}),
         ("c", "sent", {"data": {"order": None}})],
        ["c"],
    ),
    "numbers": (
        {"data.order.total": {"$gt": 100, "$lte": 200}},
        [("a", "sent", {"data": {"order": {"total": 100}}}), ("b", "sent", {"data": {"order": {"total": "150"}}}),
         ("c", "sent", {"data": {"order": {"total": 150.5}}}), ("d", "sent", {"data": {"order": {"total": 201}}})],
        ["c"],
    ),
    "times": (
        {"occurredAt": {"$gte": "2025-01-01T00:00:00Z"}, "data.at": {"$lt": "2025-06-01T02:00:00+02:00"}},
        [("a", "sent", {"occurredAt": "2024-12-31T23:59:59Z", "data": {"at": "2025-01-01T00:00:00Z"}}),
         ("b", "sent", {"occurredAt": "2025-01-01T00:00:00Z", "data": {"at": "2025-06-01T00:00:00Z"}}),
         ("c", "sent", {"occurredAt": "2025-01-01T01:00:00+01:00", "data": {"at": "2025-05-31T23:59:59.999Z"}})],
        ["c"],
    ),
    "$and, $or and $not": (
        {"$or": [{"type": "bounced"}, {"$and": [{"type": "clicked"}, {"data.url": {"$not": {"$in": ["https://x"]}}}]}]},
        [("a", "clicked", {"data": {"url": "https://x"}}), ("b", "clicked", {"data": {"url": "https://y"}}),
         ("c", "bounced", {"data": {"bounceType": "soft"}}), ("d", "sent", {})],
        ["b", "c"],
    ),
    "the older form": (
        {"definitionKey": "receipt", "bounceType": "hard"},
        [("a", "bounced", {"definitionKey": "receipt", "data": {"bounceType": "soft"}}),
         ("b", "bounced", {"definitionKey": "other", "data": {"bounceType": "hard"}}),
         ("c", "bounced", {"definitionKey": "receipt", "data": {"bounceType": "hard"}})],
        ["c"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
async def test_a_receiver_gets_only_the_events_its_filter_matches(
    api: Api, receiver: Receiver, database, case: str
):  # fmt: skip
    filters, events, expected = CASES[case]
    await setup_callback(api, receiver, filters=filters)
    for key, type_, extra in events:
        await post(api, key, type_, **extra)
    # A marker that matches, recorded last: once it arrives, everything recorded before it was handled.
    marker_type, marker_extra = next((t, x) for k, t, x in events if k == "c")
    await post(api, "marker", marker_type, **marker_extra)
    received = await receiver.wait_for(len(expected) + 1)
    assert sorted(r.json["data"]["messageKey"] for r in received) == sorted([*expected, "marker"])
    assert await fanned_out(database) == [*expected, "marker"]


async def test_a_subscription_written_by_version_10_keeps_the_older_meaning(
    api: Api, receiver: Receiver, database
):  # fmt: skip
    """A row with filters and no compiled path (version 10 wrote it): its filters are fields data contains,
    `type` included (the syntax now reads `type` as the event's type)."""
    await setup_callback(api, receiver, filters={"type": "promo"})
    await database.pool.execute("UPDATE subscriptions SET filter_path = NULL")
    await post(api, "a", "sent", data={"type": "news"})
    await post(api, "b", "sent", data={"type": "promo"})
    await post(api, "marker", "sent", data={"type": "promo"})
    await receiver.wait_for(2)
    assert await fanned_out(database) == ["b", "marker"]


async def test_a_patch_recompiles_the_filter_and_an_empty_filter_matches_everything(
    api: Api, receiver: Receiver, database
):  # fmt: skip
    callback_id, _ = await setup_callback(api, receiver, filters={"type": "bounced"})
    _, subs = await api.get(f"/v1/subscriptions?callbackId={callback_id}")
    sub_id = subs["subscriptions"][0]["subscriptionId"]
    await post(api, "a", "sent")
    status, sub = await api.patch(f"/v1/subscriptions/{sub_id}", {"filters": {"type": {"$in": ["sent"]}}})
    assert status == 200 and sub["filters"] == {"type": {"$in": ["sent"]}}, sub
    await post(api, "b", "sent")
    await post(api, "c", "delivered")
    status, sub = await api.patch(f"/v1/subscriptions/{sub_id}", {"filters": {}})
    assert status == 200 and await database.pool.fetchval("SELECT filter_path FROM subscriptions") is None
    await post(api, "marker", "opened")
    await receiver.wait_for(2)
    assert await fanned_out(database) == ["b", "marker"]


@pytest.mark.parametrize(
    ("filters", "field", "code"),
    [
        ({"$or": [{"type": "sent"}, {"data.total": {"$gtt": 5}}]}, "filters.$or[1].data.total.$gtt", "invalid_choice"),
        ({"data.total": {"$gt": "tomorrow"}}, "filters.data.total.$gt", "invalid_value"),
        ({"order.total": 5}, "filters.order.total", "invalid_value"),
        ({"type": {"$in": "sent"}}, "filters.type.$in", "invalid_type"),
    ],
)
async def test_a_refused_filter_is_a_400_naming_the_operator_or_path(
    api: Api, receiver: Receiver, filters: dict, field: str, code: str
):  # fmt: skip
    callback_id, _ = await setup_callback(api, receiver)
    status, body = await api.post(
        "/v1/subscriptions", {"name": "bad", "callbackId": callback_id, "eventTypes": ["*"], "filters": filters}
    )
    assert status == 400 and (body["error"]["field"], body["error"]["code"]) == (field, code), body
    _, subs = await api.get(f"/v1/subscriptions?callbackId={callback_id}")
    sub_id = subs["subscriptions"][0]["subscriptionId"]
    status, body = await api.patch(f"/v1/subscriptions/{sub_id}", {"filters": filters})
    assert status == 400 and (body["error"]["field"], body["error"]["code"]) == (field, code), body
    _, sub = await api.get(f"/v1/subscriptions/{sub_id}")
    assert sub["filters"] == {}
