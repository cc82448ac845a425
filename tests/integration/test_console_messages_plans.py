"""The console's message reads stay index reads on big history, and read only the days they need (the
history of tests/integration/test_history_plans.py: 40,000 events over eight days, two accounts)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tests.integration.test_history_plans import DAYS, DELIVERIES, EVENTS, days_read, plan_of, sequential, window
from tests.integration.test_history_plans import history as history  # the fixture


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"types": ["clicked"]},
        {"message_key": "m-5"},
        {"definition_key": "def-3"},
        {"since": True, "until": True},
        {"types": ["clicked"], "since": True, "until": True},
    ],
    ids=["account", "type", "messageKey", "definitionKey", "time window", "type in a time window"],
)
async def test_the_message_search_with_each_filter_is_read_from_an_index_newest_first(database, history, filters):
    """events.search_events passes (account, before id, types, messageKey, definitionKey, recipient, since,
    until, limit); a lower bound on occurredAt reads the days from the one before it on."""
    since, until = window(history)
    args = [
        history["account"], 2**63 - 1, filters.get("types"), filters.get("message_key"),
        filters.get("definition_key"), filters.get("recipient"), since if filters.get("since") else None,
        until if filters.get("until") else None, 51,
    ]  # fmt: skip
    async with database.pool.acquire() as conn:
        plan = await plan_of(conn, EVENTS["search_events"], *args)
    assert sequential(plan) == [], plan
    read = days_read(plan, "events")
    assert read, plan
    if filters.get("since"):
        assert min(read) == (since - timedelta(days=1)).replace(hour=0), plan
    else:
        assert len(read) == DAYS, plan


async def test_a_recipient_search_reads_only_the_days_of_its_window(database, history):
    """No index holds recipients: the search reads its window's rows (from the day before From; the
    console defaults From to a week back), never older days."""
    since, _ = window(history)
    args = [history["account"], 2**63 - 1, None, None, None, "u8@example.com", since, None, 51]
    async with database.pool.acquire() as conn:
        plan = await plan_of(conn, EVENTS["search_events"], *args)
    assert min(days_read(plan, "events")) == (since - timedelta(days=1)).replace(hour=0), plan


async def timeline_deliveries_plan(database: Any, history: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """The plan of history.event_deliveries (account, the events' ids, their recorded_at) for a timeline."""
    async with database.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, recorded_at FROM events WHERE account_id = $1 AND message_key = 'm-77'", history["account"]
        )
        days = sorted({r["recorded_at"] for r in rows})
        plan = await plan_of(conn, DELIVERIES["event_deliveries"], history["account"], [r["id"] for r in rows], days)
    assert rows
    return plan, days


async def test_a_timelines_deliveries_are_read_from_the_days_of_its_events_only(database, history):
    plan, days = await timeline_deliveries_plan(database, history)
    assert days_read(plan, "deliveries") == {d.replace(hour=0, minute=0, second=0, microsecond=0) for d in days}, plan


async def test_a_timelines_deliveries_are_found_by_their_events_ids(database, history):
    """deliveries_event and queue_event: not each of the events' days read whole."""
    plan, _ = await timeline_deliveries_plan(database, history)
    reads = [n for n in plan if n.get("Relation Name", "").startswith(("deliveries_", "queue"))]
    assert reads and all("event_id" in n.get("Index Cond", "") for n in reads), plan


@pytest.mark.parametrize("which", ["pending", "finished"])
async def test_a_deliverys_event_is_read_by_its_keys(database, history, which):
    """history.delivery_event passes (account, event id, recorded_at, delivery id, callback id)."""
    async with database.pool.acquire() as conn:
        d = await conn.fetchrow(
            "SELECT id, event_id, created_at, callback_id FROM queue WHERE id = $1"
            " UNION ALL SELECT id, event_id, created_at, callback_id FROM deliveries WHERE id = $1",
            history[which],
        )
        plan = await plan_of(
            conn, DELIVERIES["delivery_event"], history["account"], d["event_id"], d["created_at"], d["id"],
            d["callback_id"],
        )  # fmt: skip
    assert sequential(plan) == [], plan
    assert days_read(plan, "events") == {d["created_at"].replace(hour=0, minute=0, second=0, microsecond=0)}, plan
