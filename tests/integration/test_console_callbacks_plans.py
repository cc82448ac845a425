"""The Callbacks view's reads stay bounded on big history (the history of test_history_plans: 40,000
events over eight days' partitions, their deliveries and attempts): a callback's health and latency read
only their window's days of the attempt log (they aggregate every request in it, so which scan reads a
day is the planner's choice), its latest deliveries and requests walk indexes backwards and stop at the
limit (no sort of the callback's whole history), and one request is read by its key. Plans are of the
statements in dispatcher/sql, with the parameters dispatcher/delivery/history.py passes."""

from __future__ import annotations

from tests.integration.test_history_plans import (  # noqa: F401 (history is a fixture)
    DELIVERIES,
    days_between,
    days_read,
    history,
    plan_of,
    sequential,
    window,
)


def indexed(plan: list[dict]) -> bool:
    return any(n["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Index Scan") for n in plan)


async def test_a_callbacks_health_reads_its_windows_days_of_attempts_from_the_index(database, history):  # noqa: F811
    """history.callback_health passes (callback ids, account, since)."""
    since, _ = window(history)
    async with database.pool.acquire() as conn:
        plan = await plan_of(conn, DELIVERIES["callback_health"], [history["callback"]], history["account"], since)
    assert min(days_read(plan, "attempts")) == since.replace(hour=0), plan  # nothing before the window


async def test_a_callbacks_latency_reads_only_its_windows_days(database, history):  # noqa: F811
    """history.callback_latency passes (callback, account, since, bucket seconds, until)."""
    since, until = window(history)
    bucket = (until - since).total_seconds() / 48
    async with database.pool.acquire() as conn:
        plan = await plan_of(
            conn, DELIVERIES["callback_latency"], history["callback"], history["account"], since, bucket, until
        )
    assert days_read(plan, "attempts") == days_between(since, until), plan


async def test_a_callbacks_latest_deliveries_and_requests_walk_their_indexes(database, history):  # noqa: F811
    """history.recent_deliveries and recent_attempts pass (callback, account, limit)."""
    async with database.pool.acquire() as conn:
        deliveries = await plan_of(conn, DELIVERIES["recent_deliveries"], history["callback"], history["account"], 50)
        attempts = await plan_of(conn, DELIVERIES["recent_attempts"], history["callback"], history["account"], 50)
    for plan, table in ((deliveries, "deliveries_"), (attempts, "attempts_")):
        assert sequential(plan) == [], plan
        assert not any(n["Node Type"] in ("Sort", "Incremental Sort") for n in plan), plan
        scans = [n for n in plan if n.get("Relation Name", "").startswith(table)]
        assert scans and all(n["Node Type"] == "Index Scan" and n["Scan Direction"] == "Backward" for n in scans), plan
    events = [n for n in deliveries if n.get("Relation Name", "").startswith("events_")]
    assert events and all(n["Node Type"].startswith("Index") for n in events), deliveries


async def test_one_request_of_the_attempt_log_is_read_by_its_key(database, history):  # noqa: F811
    """history.callback_attempt passes (attempt id, callback, account)."""
    async with database.pool.acquire() as conn:
        attempt = await conn.fetchval("SELECT max(id) FROM attempts WHERE callback_id = $1", history["callback"])
        plan = await plan_of(conn, DELIVERIES["callback_attempt"], attempt, history["callback"], history["account"])
    assert sequential(plan) == [], plan
    assert indexed(plan), plan
