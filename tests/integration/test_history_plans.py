"""History reads stay index reads however much history there is: with 40,000 events (and their
deliveries and attempts) over two accounts, analysed, a message's timeline, the event list with each of
its filters, a callback's deliveries and its attempt log are planned on indexes, never a sequential
scan of events, deliveries or attempts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dispatcher.db import queries
from tests.conftest import make_key

EVENTS = queries("events")
DELIVERIES = queries("deliveries")
HISTORY_TABLES = {"events", "deliveries", "attempts"}


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]


async def plan_of(conn: Any, sql: str, *args: Any) -> list[dict[str, Any]]:
    [plan] = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
    return nodes(plan["Plan"])


def scanned(plan: list[dict[str, Any]]) -> set[str]:
    """The history tables the plan reads with a sequential scan."""
    return {n["Relation Name"] for n in plan if n["Node Type"] == "Seq Scan"} & HISTORY_TABLES


@pytest.fixture
async def history(database) -> dict[str, int]:
    await make_key(database, "acme")
    await make_key(database, "globex")
    async with database.pool.acquire() as conn:
        accounts = [r["id"] for r in await conn.fetch("SELECT id FROM accounts ORDER BY id")]
        callbacks = []
        for account in accounts:
            callbacks.append(await conn.fetchval(
                "INSERT INTO callbacks (account_id, name, url, status) VALUES ($1, 'hook', 'https://example.com/h', 'active')"
                " RETURNING id", account))  # fmt: skip
        await conn.execute(
            """INSERT INTO events (account_id, type, message_key, definition_key, recipient, occurred_at, data)
               SELECT (ARRAY[$1::bigint, $2::bigint])[1 + g % 2],
                      (ARRAY['sent', 'delivered', 'opened', 'clicked'])[1 + g % 4], 'm-' || (g / 4),
                      'def-' || (g % 10), 'u' || g || '@example.com', now() - make_interval(secs => g), '{}'
               FROM generate_series(1, 40000) g""",
            *accounts,
        )
        await conn.execute(
            """INSERT INTO deliveries (account_id, event_id, callback_id, status)
               SELECT e.account_id, e.id, c.id, 'succeeded' FROM events e JOIN callbacks c ON c.account_id = e.account_id"""
        )
        await conn.execute(
            """INSERT INTO attempts (account_id, callback_id, webhook_id, events, started_at, duration_ms, status_code)
               SELECT d.account_id, d.callback_id, 'dlv_' || d.id, 1, now(), 1.0, 200 FROM deliveries d"""
        )
        await conn.execute("ANALYZE events; ANALYZE deliveries; ANALYZE attempts")
    return {"account": accounts[0], "callback": callbacks[0]}


async def test_a_messages_timeline_is_read_from_its_index(database, history):
    async with database.pool.acquire() as conn:
        plan = await plan_of(conn, EVENTS["message_events"], history["account"], "m-77")
    assert scanned(plan) == set(), plan
    assert any(n.get("Index Name") == "events_message" for n in plan), plan


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"types": ["clicked"]},
        {"message_key": "m-5"},
        {"definition_key": "def-3"},
        {"since": True, "until": True},
    ],
    ids=["account", "type", "messageKey", "definitionKey", "time window"],
)
async def test_the_event_list_with_each_filter_is_read_from_an_index(database, history, filters):
    now = datetime.now(UTC)
    args = [
        history["account"], 0, filters.get("types"), filters.get("message_key"), filters.get("definition_key"),
        now - timedelta(hours=1) if filters.get("since") else None, now if filters.get("until") else None, 100,
    ]  # fmt: skip
    async with database.pool.acquire() as conn:
        plan = await plan_of(conn, EVENTS["list_events"], *args)
    assert scanned(plan) == set(), plan


async def test_a_callbacks_deliveries_and_attempt_log_are_read_from_their_indexes(database, history):
    async with database.pool.acquire() as conn:
        deliveries = await plan_of(
            conn, DELIVERIES["list_deliveries"], history["callback"], history["account"], 0, None, None, None, 100
        )
        attempts = await plan_of(
            conn, DELIVERIES["callback_attempts"], history["callback"], history["account"], 0, None, None, None, 100
        )
    for plan in (deliveries, attempts):
        assert scanned(plan) == set(), plan
        assert any(n["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Index Scan") for n in plan), plan
