"""History reads stay index reads however much history there is, and a time bound limits them to its
days. With 40,000 events over eight days' partitions (two accounts), their finished deliveries, some
still queued, and the attempt log, analysed: a message's timeline, the event list with each of its
filters, a callback's deliveries, its attempt log and one delivery are planned on indexes, never a
sequential scan of a history table's partition; given a time bound, the plan reads no partition of a
day outside it. Plans are of the statements in dispatcher/sql, with the parameters the code passes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from dispatcher import partitions
from dispatcher.db import queries
from tests.conftest import make_key

EVENTS = queries("events")
DELIVERIES = queries("deliveries")
DAYS = 8  # today, the three days ahead that always exist, and the four before with history
HISTORY = re.compile(r"^(events|deliveries|attempts|source_receipts)_(\d{8})$")


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]


async def plan_of(conn: Any, sql: str, *args: Any) -> list[dict[str, Any]]:
    [plan] = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
    return nodes(plan["Plan"])


def sequential(plan: list[dict[str, Any]]) -> list[str]:
    """The history partitions the plan reads with a sequential scan."""
    return [n["Relation Name"] for n in plan if n["Node Type"] == "Seq Scan" and HISTORY.match(n["Relation Name"])]


def days_read(plan: list[dict[str, Any]], table: str) -> set[datetime]:
    """The days of `table` whose partitions the plan reads (after the pruning known at its start)."""
    return {
        datetime.strptime(m[2], "%Y%m%d").replace(tzinfo=UTC)
        for n in plan
        if (m := HISTORY.match(n.get("Relation Name", ""))) and m[1] == table
    }


@pytest.fixture
async def history(database) -> dict[str, Any]:
    """5,000 events a day (alternately of each account) at even times over the eight days' partitions (recorded_at
    set, as the service would have on that day); each event's delivery finished (dated by its event)
    except every 25th, still queued; each attempt a second after its event."""
    await make_key(database, "acme")
    await make_key(database, "globex")
    first = datetime.combine(partitions.today() - timedelta(days=DAYS - 4), time(), UTC)
    async with database.pool.acquire() as conn:
        await partitions.ensure(conn, start=first.date(), days=DAYS)
        accounts = [r["id"] for r in await conn.fetch("SELECT id FROM accounts ORDER BY id")]
        callbacks = [await conn.fetchval(
            "INSERT INTO callbacks (account_id, name, url, status) VALUES ($1, 'hook', 'https://example.com/h', 'active')"
            " RETURNING id", account) for account in accounts]  # fmt: skip
        await conn.execute(
            """INSERT INTO events (account_id, type, message_key, definition_key, recipient, occurred_at, recorded_at,
                                   data)
               SELECT (ARRAY[$1::bigint, $2::bigint])[1 + g % 2],
                      (ARRAY['sent', 'delivered', 'opened', 'clicked'])[1 + g % 4], 'm-' || (g / 4),
                      'def-' || (g % 10), 'u' || g || '@example.com', t, t, '{}'
               FROM generate_series(0, $4 * 5000 - 1) g,
                    LATERAL (SELECT $3::timestamptz + make_interval(secs => g * 86400.0 / 5000)) r(t)""",
            *accounts, first, DAYS,
        )  # fmt: skip
        await conn.execute(
            """INSERT INTO attempts (account_id, callback_id, webhook_id, events, started_at, duration_ms, status_code)
               SELECT e.account_id, c.id, 'msg_' || e.id, 1, e.recorded_at + interval '1 second', 1.0, 200
               FROM events e JOIN callbacks c ON c.account_id = e.account_id ORDER BY e.id"""
        )
        await conn.execute(
            """INSERT INTO deliveries (id, account_id, event_id, callback_id, status, attempts, retry_base, created_at,
                                       finished_at, attempt_ids)
               SELECT nextval(pg_get_serial_sequence('queue', 'id')), e.account_id, e.id, c.id, 'succeeded', 1, 0,
                      e.recorded_at, e.recorded_at + interval '1 second', ARRAY[a.id]
               FROM events e JOIN callbacks c ON c.account_id = e.account_id
               JOIN attempts a ON a.webhook_id = 'msg_' || e.id
               WHERE e.id % 25 <> 0 ORDER BY e.id"""
        )
        await conn.execute(
            """INSERT INTO queue (account_id, event_id, callback_id, created_at)
               SELECT e.account_id, e.id, c.id, e.recorded_at FROM events e JOIN callbacks c ON c.account_id = e.account_id
               WHERE e.id % 25 = 0"""
        )
        await conn.execute("ANALYZE events; ANALYZE deliveries; ANALYZE attempts; ANALYZE queue")
        pending = await conn.fetchval("SELECT id FROM queue WHERE account_id = $1 LIMIT 1", accounts[0])
        finished = await conn.fetchval("SELECT id FROM deliveries WHERE account_id = $1 LIMIT 1", accounts[0])
    return {"account": accounts[0], "callback": callbacks[0], "first": first, "pending": pending, "finished": finished}


def window(history: dict[str, Any]) -> tuple[datetime, datetime]:
    """Two days in the middle of the history, from noon to noon."""
    since = history["first"] + timedelta(days=2, hours=12)
    return since, since + timedelta(days=2)


def days_between(start: datetime, end: datetime) -> set[datetime]:
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    found = set()
    while day < end:
        found.add(day)
        day += timedelta(days=1)
    return found


async def test_a_messages_timeline_is_read_from_its_index(database, history):
    async with database.pool.acquire() as conn:
        plan = await plan_of(conn, EVENTS["message_events"], history["account"], "m-77")
    assert sequential(plan) == [], plan
    indexes = [n["Index Name"] for n in plan if n.get("Index Name", "").startswith("events_")]
    assert indexes and all("message_key" in name for name in indexes), plan


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"types": ["clicked"]},
        {"message_key": "m-5"},
        {"definition_key": "def-3"},
        {"since": True},
        {"since": True, "until": True},
        {"types": ["clicked"], "since": True, "until": True},
    ],
    ids=["account", "type", "messageKey", "definitionKey", "since", "time window", "type in a time window"],
)
async def test_the_event_list_with_each_filter_is_read_from_an_index_and_a_lower_bound_skips_older_days(
    database, history, filters
):
    """events.list_events passes (account, after id, types, messageKey, definitionKey, since, until,
    limit). Events are accepted up to a day ahead of their recording, so a lower bound on occurredAt
    reads the days from the one before it on; an upper bound prunes nothing (a late event)."""
    since, until = window(history)
    args = [
        history["account"], 0, filters.get("types"), filters.get("message_key"), filters.get("definition_key"),
        since if filters.get("since") else None, until if filters.get("until") else None, 101,
    ]  # fmt: skip
    async with database.pool.acquire() as conn:
        plan = await plan_of(conn, EVENTS["list_events"], *args)
    assert sequential(plan) == [], plan
    read = days_read(plan, "events")
    assert read, plan
    if filters.get("since"):
        assert min(read) == (since - timedelta(days=1)).replace(hour=0), plan


@pytest.mark.parametrize("bounded", [False, True], ids=["all", "time window"])
async def test_a_callbacks_deliveries_are_read_from_indexes_and_a_time_window_reads_only_its_days(
    database, history, bounded
):
    """deliveries.list_deliveries passes (callback, account, after id, status, since, until, limit)."""
    since, until = window(history) if bounded else (None, None)
    async with database.pool.acquire() as conn:
        plan = await plan_of(
            conn, DELIVERIES["list_deliveries"], history["callback"], history["account"], 0, None, since, until, 101
        )
    assert sequential(plan) == [], plan
    assert any(n["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Index Scan") for n in plan), plan
    if bounded:
        assert days_read(plan, "deliveries") == days_between(since, until), plan
        assert days_read(plan, "events") <= days_between(since, until), plan


@pytest.mark.parametrize("bounded", [False, True], ids=["all", "time window"])
async def test_a_callbacks_attempt_log_is_read_from_its_index_and_a_time_window_reads_only_its_days(
    database, history, bounded
):
    """deliveries.callback_attempts passes (callback, account, after id, succeeded, since, until, limit)."""
    since, until = window(history) if bounded else (None, None)
    async with database.pool.acquire() as conn:
        plan = await plan_of(
            conn, DELIVERIES["callback_attempts"], history["callback"], history["account"], 0, None, since, until, 101
        )
    assert sequential(plan) == [], plan
    assert any(n["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Index Scan") for n in plan), plan
    if bounded:
        assert days_read(plan, "attempts") == days_between(since, until), plan
    else:
        assert len(days_read(plan, "attempts")) == DAYS, plan


@pytest.mark.parametrize("which", ["pending", "finished"])
async def test_one_delivery_is_read_by_its_keys(database, history, which):
    """deliveries.get_delivery passes (delivery id, account): found in the queue or in the history,
    its event is read by (id, recorded_at) from that day's partition's index."""
    async with database.pool.acquire() as conn:
        plan = await plan_of(conn, DELIVERIES["get_delivery"], history[which], history["account"])
    assert sequential(plan) == [], plan
    events = [n for n in plan if n.get("Relation Name", "").startswith("events_")]
    assert events and all(n["Node Type"].startswith("Index") for n in events), plan
