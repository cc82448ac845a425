"""The 24-hour and 7-day charts read rolled-up 10-minute slots (activity_rollups, filled by the retention
round) and only the slots after them raw: the charts are exactly what the raw history gives, however the
rollups and the tail split the window, and their reads stay index reads of the window (the issue's
speed: each overview query under 100 ms with 10 million events; bench/history.py times them)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest

from dispatcher import activity, partitions
from dispatcher.db import queries
from dispatcher.retention import Purger
from tests.conftest import make_key
from tests.console import Console
from tests.integration.test_console_overview import summary
from tests.integration.test_history_plans import days_between, days_read, history, plan_of, sequential

SQL = queries("activity")
__all__ = ["history"]  # the fixture (the signed-in `console` comes from conftest.py)
TYPES = ["sent", "delivered", "opened", "clicked", "bounced", "complained", "queued", "failed"]  # more than TOP_TYPES


async def accounts(database: Any) -> list[int]:
    await make_key(database, "acme")
    await make_key(database, "globex")
    return [r["id"] for r in await database.pool.fetch("SELECT id FROM accounts ORDER BY id")]


async def record(database: Any, account: int, at: datetime, *, type: str = "sent", status: int | None = 200) -> None:
    """An event recorded at `at` and a request carrying two deliveries started then."""
    await database.pool.execute(
        "INSERT INTO events (account_id, type, message_key, occurred_at, recorded_at) VALUES ($1, $2, 'k', $3, $3)",
        account, type, at,
    )  # fmt: skip
    await database.pool.execute(
        "INSERT INTO attempts (account_id, callback_id, events, started_at, duration_ms, status_code)"
        " VALUES ($1, 1, 2, $2, 1.0, $3)",
        account, at, status,
    )  # fmt: skip


async def fill(database: Any, now: datetime) -> list[int]:
    """Two accounts' events of eight types and requests (2xx, 5xx, no answer) every 7 min 13 s over the
    last eight days, denser in the last hour, and some exactly on slot boundaries."""
    ids = await accounts(database)
    async with database.pool.acquire() as conn:
        await partitions.ensure(conn, start=partitions.today() - timedelta(days=8), days=9)
        await conn.execute(
            """INSERT INTO events (account_id, type, message_key, occurred_at, recorded_at)
               SELECT ($1::bigint[])[1 + g % 2], ($2::text[])[1 + (g + g / 8) % 8], 'm' || g, t, t
               FROM generate_series(0, 1700) g, LATERAL (SELECT $3::timestamptz - g * interval '433 s') x(t)
               UNION ALL
               SELECT ($1::bigint[])[1 + g % 2], ($2::text[])[1 + g % 3], 'r' || g, t, t
               FROM generate_series(0, 300) g, LATERAL (SELECT $3::timestamptz - g * interval '11 s') x(t)
               UNION ALL
               SELECT ($1::bigint[])[1], 'sent', 'b' || g, t, t
               FROM generate_series(1, 300) g,
                    LATERAL (SELECT date_bin('10 minutes', $3::timestamptz, 'epoch') - g * interval '10 minutes') x(t)""",
            ids, TYPES, now,
        )  # fmt: skip
        await conn.execute(
            """INSERT INTO attempts (account_id, callback_id, events, started_at, duration_ms, status_code)
               SELECT account_id, 1, 1 + id % 3, recorded_at + interval '1 s', 1.0,
                      (ARRAY[200, 204, 500, NULL])[1 + id % 4]
               FROM events WHERE recorded_at + interval '1 s' < $1""",
            now,
        )
    return ids


async def charts(database: Any, account: int, window: activity.Window, now: datetime) -> tuple[Any, Any]:
    return (
        await activity.events_chart(database.pool, account, window, now),
        await activity.deliveries_chart(database.pool, account, window, now),
    )


async def assert_as_raw(database: Any, ids: list[int], now: datetime) -> None:
    for account in ids:
        for window in activity.WINDOWS.values():
            raw = dataclasses.replace(window, rolled_up=False)
            assert await charts(database, account, window, now) == await charts(database, account, raw, now), window


async def roll_up_all(database: Any, now: datetime) -> int:
    """Retention rounds until the rollups reach ROLLUP_LAG before `now`; how many rounds took slots."""
    rounds = 0
    async with database.pool.acquire() as conn:
        while await activity.roll_up(conn, now):
            rounds += 1
    return rounds


async def rollups(database: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await database.pool.fetch("SELECT * FROM activity_rollups ORDER BY 1, 2, 3, 4")]


def slot_floor(at: datetime) -> datetime:
    return datetime.fromtimestamp(at.timestamp() // 600 * 600, UTC)


async def test_rolled_up_charts_are_the_raw_charts_in_every_window(database):
    now = datetime.now(UTC)
    ids = await fill(database, now)
    before = {(a, w): await charts(database, a, w, now) for a in ids for w in activity.WINDOWS.values()}
    assert await roll_up_all(database, now) == 7  # a day a round, from 7 days back
    held = await database.pool.fetchrow("SELECT since, upto FROM activity_rolled")
    assert held["since"] == slot_floor(now - timedelta(days=7))
    assert held["upto"] == slot_floor(now - activity.ROLLUP_LAG)
    assert await database.pool.fetchval("SELECT count(DISTINCT (account_id, kind)) FROM activity_rollups") == 4
    await assert_as_raw(database, ids, now)
    after = {(a, w): await charts(database, a, w, now) for a in ids for w in activity.WINDOWS.values()}
    assert after == before
    events, deliveries = after[(ids[0], activity.WINDOWS["7d"])]
    assert [s.name for s in events.series][-1] == "other" and {s.name for s in deliveries.series} == {
        "succeeded",
        "failed",
    }
    assert all(s.total for s in deliveries.series)


async def test_rolling_up_again_changes_nothing(database):
    now = datetime.now(UTC)
    await fill(database, now)
    await roll_up_all(database, now)
    counted = await rollups(database)
    async with database.pool.acquire() as conn:
        assert await activity.roll_up(conn, now) == 0  # nothing complete since
        await conn.execute("UPDATE activity_rolled SET upto = since")  # as if every slot were still to count
    await roll_up_all(database, now)
    assert await rollups(database) == counted


def total(chart: Any) -> int:
    return sum(s.total for s in chart.series)


async def test_rows_arriving_late_inside_the_lag_are_counted_once(database):
    now = datetime.now(UTC)
    ids = await fill(database, now)
    await roll_up_all(database, now)
    upto = await database.pool.fetchval("SELECT upto FROM activity_rolled")
    day = activity.WINDOWS["24h"]
    events, deliveries = await charts(database, ids[0], day, now)
    # Stamped before they became visible (a transaction's start, a request's start), after the rollups' end.
    await record(database, ids[0], upto, type="late", status=None)
    await record(database, ids[0], upto + timedelta(minutes=1), type="late")
    now_events, now_deliveries = await charts(database, ids[0], day, now)
    assert (total(now_events), total(now_deliveries)) == (total(events) + 2, total(deliveries) + 4)
    await assert_as_raw(database, ids, now)
    later = now + timedelta(minutes=20)  # the next round: their slot is complete now
    assert await roll_up_all(database, later) == 1
    late = "SELECT n FROM activity_rollups WHERE name = 'late'"
    assert [r["n"] for r in await database.pool.fetch(late)] == [2]
    assert await charts(database, ids[0], day, now) == (now_events, now_deliveries)
    await assert_as_raw(database, ids, now)
    await assert_as_raw(database, ids, later)


async def test_the_first_rollup_starts_at_the_retention_horizon_or_the_oldest_day(database):
    now = datetime.now(UTC)
    await fill(database, now)
    async with database.pool.acquire() as conn:
        assert await activity.roll_up(conn, now, horizon=now - timedelta(hours=30)) == 144
        assert await conn.fetchval("SELECT since FROM activity_rolled") == slot_floor(now - timedelta(hours=30))
        assert await conn.fetchval("SELECT min(slot) FROM activity_rollups") >= slot_floor(now - timedelta(hours=30))
        await conn.execute("DELETE FROM activity_rolled; DELETE FROM activity_rollups")
        for p in await partitions.existing(conn):
            if p.day < partitions.today() - timedelta(days=1):
                await conn.execute(f"DROP TABLE {p.name}")
        await activity.roll_up(conn, now)
        oldest = datetime.combine(partitions.today() - timedelta(days=1), time(), UTC)
        assert await conn.fetchval("SELECT since FROM activity_rolled") == oldest


async def test_the_purge_rolls_up_and_drops_rollups_past_the_retention(database, settings):
    now = datetime.now(UTC)
    ids = await fill(database, now)
    await roll_up_all(database, now)
    old = "SELECT count(*) FROM activity_rollups WHERE slot < $1"
    assert await database.pool.fetchval(old, now - timedelta(days=2)) > 0
    await record(database, ids[0], now - timedelta(minutes=30), type="fresh")
    # The last hour still to roll up, as if the previous round ran an hour ago.
    await database.pool.execute("UPDATE activity_rolled SET upto = upto - interval '1 hour'")
    await database.pool.execute("DELETE FROM activity_rollups WHERE slot >= (SELECT upto FROM activity_rolled)")
    done = await Purger(database, settings.model_copy(update={"retention_days": 2})).purge()
    assert done["rollup_slots"] >= 6 and done["purge_rollups"] > 0
    assert await database.pool.fetchval(old, now - timedelta(days=2)) == 0  # the purge's now() is later
    assert await database.pool.fetchval(old, now - timedelta(days=1)) > 0
    assert await database.pool.fetchval("SELECT count(*) FROM activity_rollups WHERE name = 'fresh'") == 1


async def test_the_overview_page_shows_rolled_up_slots_and_the_raw_tail(console: Console, api, database):
    account = await database.pool.fetchval("SELECT id FROM accounts WHERE name = 'acme'")
    now = datetime.now(UTC)
    async with database.pool.acquire() as conn:
        await partitions.ensure(conn, start=partitions.today() - timedelta(days=1), days=2)
        # Whatever the app's own first retention round rolled up: start again after the old rows are in.
        await conn.execute("DELETE FROM activity_rolled; DELETE FROM activity_rollups")
    await record(database, account, now - timedelta(hours=3), type="opened")
    assert await roll_up_all(database, now)
    assert await database.pool.fetchval("SELECT sum(n) FROM activity_rollups WHERE account_id = $1", account) == 3
    # Gone from the raw history, the old rows still count where the page reads the rollups: it does.
    await database.pool.execute("DELETE FROM events WHERE type = 'opened'; DELETE FROM attempts")
    await api.post("/v1/events", {"type": "sent", "messageKey": "new"})
    _, page = await console.get("/console/overview?window=6h")
    assert summary(page, "events-chart").startswith("1 events in all (sent 1)"), page
    for window in ("24h", "7d"):
        _, page = await console.get(f"/console/overview?window={window}")
        assert summary(page, "events-chart").startswith("2 events in all"), (window, page)
        assert summary(page, "deliveries-chart").startswith("2 deliveries in all (succeeded 2, failed 0)"), window
        assert "opened" in summary(page, "events-chart"), window


# Plans, over the history of tests/integration/test_history_plans.py rolled up.


async def rolled_history(database: Any, history: dict[str, Any]) -> tuple[datetime, datetime]:
    """The history rolled up, and the second account's rollups copied to 100 more accounts (so the
    table holds many accounts' slots, as it will)."""
    now = datetime.now(UTC)
    await roll_up_all(database, now)
    await database.pool.execute(
        """WITH more AS (INSERT INTO accounts (name) SELECT 'more-' || g FROM generate_series(1, 100) g RETURNING id)
           INSERT INTO activity_rollups (account_id, kind, slot, name, n)
           SELECT more.id, r.kind, r.slot, r.name, r.n FROM more, activity_rollups r WHERE r.account_id = $1""",
        history["account"] + 1,
    )
    await database.pool.execute("ANALYZE activity_rollups")
    held = await database.pool.fetchrow("SELECT since, upto FROM activity_rolled")
    return held["since"], held["upto"]


@pytest.mark.parametrize("query", ["events_rolled_up", "attempts_rolled_up"])
async def test_a_rolled_up_read_is_an_index_scan_of_its_window(database, history, query):
    since, upto = await rolled_history(database, history)
    for name in ("24h", "7d"):
        window = activity.WINDOWS[name]
        start, end = window.bounds(datetime.now(UTC))
        async with database.pool.acquire() as conn:
            plan = await plan_of(conn, SQL[query], history["account"], max(start, since), min(upto, end), window.bucket)
        [scan] = [n for n in plan if n.get("Relation Name") == "activity_rollups"]
        assert (scan["Node Type"], scan["Index Name"]) == ("Index Scan", "activity_rollups_pkey"), plan
        assert all(f"({c}" in scan["Index Cond"] for c in ("account_id =", "kind =", "slot >=", "slot <")), plan
        assert not any(n.get("Relation Name", "").startswith(("events", "attempts")) for n in plan), plan


@pytest.mark.parametrize(("query", "table"), [("events_per_bucket", "events"), ("attempts_per_bucket", "attempts")])
async def test_the_raw_tail_after_the_rollups_reads_only_its_days(database, history, query, table):
    _, upto = await rolled_history(database, history)
    for name in ("24h", "7d"):
        _, end = activity.WINDOWS[name].bounds(datetime.now(UTC))
        async with database.pool.acquire() as conn:
            plan = await plan_of(conn, SQL[query], history["account"], upto, end, activity.SLOT)
        assert sequential(plan) == [], plan
        read = days_read(plan, table)
        assert read and read <= days_between(upto, end), plan
