"""The overview's queries read only the window's days of history, by index, however much is stored
(the speed the issue asks for: each under 100 ms with 10 million events; bench/history.py times them).
Plans of the statements in dispatcher/sql/activity.sql with the parameters the code passes, over the
history of tests/integration/test_history_plans.py (two accounts, eight days' partitions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dispatcher import activity
from dispatcher.db import queries
from tests.integration.test_history_plans import HISTORY, days_between, days_read, history, plan_of, sequential

SQL = queries("activity")
__all__ = ["history"]  # the fixture


def at_noon(history: dict[str, Any]) -> datetime:
    """Now, as the tests take it: noon of the history's fifth day."""
    return history["first"] + timedelta(days=4, hours=12)


# The indexes the charts read by (proposed for migration 0010): created here unless the schema has them,
# so the test holds before and after the migration. Without them, each chart reads its days whole.
PROPOSED = [
    "CREATE INDEX IF NOT EXISTS events_recorded ON events (account_id, recorded_at) INCLUDE (type)",
    "CREATE INDEX IF NOT EXISTS attempts_started ON attempts (account_id, started_at) INCLUDE (events, status_code)",
]
CHARTS = {"events_per_bucket": "events", "attempts_per_bucket": "attempts"}


async def chart_plan(database, history, query: str, name: str) -> tuple[list[dict[str, Any]], datetime, datetime]:
    window = activity.WINDOWS[name]
    start, end = window.bounds(at_noon(history))
    async with database.pool.acquire() as conn:
        return await plan_of(conn, SQL[query], history["account"], start, end, window.bucket), start, end


@pytest.mark.parametrize("query", list(CHARTS))
async def test_an_overview_chart_reads_only_its_windows_days(database, history, query):
    for name in activity.WINDOWS:
        plan, start, end = await chart_plan(database, history, query, name)
        read = days_read(plan, CHARTS[query])
        assert read and read <= days_between(start, end), (name, plan)
        assert days_between(start, end) & {history["first"] + timedelta(days=n) for n in range(8)} <= read, plan


@pytest.mark.parametrize("query", list(CHARTS))
async def test_an_overview_chart_reads_its_window_from_an_index_only_scan(database, history, query):
    async with database.pool.acquire() as conn:
        for statement in PROPOSED:
            await conn.execute(statement)
        for table in CHARTS.values():
            await conn.execute(f"VACUUM ANALYZE {table}")
    for name in activity.WINDOWS:
        plan, _, _ = await chart_plan(database, history, query, name)
        assert sequential(plan) == [], (name, plan)
        assert any(n["Node Type"] == "Index Only Scan" for n in plan), (name, plan)


async def test_the_backlog_is_read_per_callback_from_the_claim_index(database, history):
    async with database.pool.acquire() as conn:
        async with conn.transaction():
            # The fixture's queue is small enough to read whole; what matters is that an index serves it
            # per callback when the queue is big.
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan = await plan_of(conn, SQL["callback_backlog"], history["account"], activity.BACKLOG_CAP)
    assert any(n.get("Index Name") == "queue_claim" for n in plan), plan
    assert not any(n["Node Type"] == "Seq Scan" for n in plan), plan
    assert not any(HISTORY.match(n.get("Relation Name", "")) for n in plan), plan


@pytest.mark.parametrize("query", ["recent_events", "events_after", "recent_attempts", "attempts_after", "live_cursor"])
async def test_the_live_views_reads_are_index_reads_of_the_last_day(database, history, query):
    account, args = history["account"], {
        "recent_events": [50], "events_after": [0, 100], "recent_attempts": [None, 50],
        "attempts_after": [None, 0, 100], "live_cursor": [],
    }[query]  # fmt: skip
    async with database.pool.acquire() as conn:
        plan = await plan_of(conn, SQL[query], account, *args)
    assert sequential(plan) == [], plan
    yesterday = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    for table in ("events", "attempts") if query == "live_cursor" else ("events" if "events" in query else "attempts",):
        read = days_read(plan, table)
        assert read and min(read) == yesterday, plan  # and the days ahead, empty until they come
