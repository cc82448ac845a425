"""The console's overview: events and deliveries per minute over the chosen window, the backlog and its
oldest due delivery, the failing and disabled callbacks — the account's own figures only."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from dispatcher import partitions
from tests.conftest import make_key, setup_callback, wait_until
from tests.console import Console

HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "javascript:alert(1)"]


def summary(page: str, chart: str) -> str:
    """The text a screen reader hears for a chart (its <desc>)."""
    found = re.search(rf'<desc id="{chart}-desc">(.*?)</desc>', page, re.DOTALL)
    assert found, page
    return html.unescape(found[1])


def figure(page: str, name: str) -> str:
    found = re.search(rf'<dd data-figure="{name}">(.*?)</dd>', page)
    assert found, page
    return found[1]


async def logged(database: Any, deliveries: int) -> None:
    """Wait until the attempt log holds requests for this many deliveries (written after each answer)."""
    total = "SELECT coalesce(sum(events), 0) FROM attempts"
    await wait_until(lambda: _at_least(database.pool.fetchval(total), deliveries))


async def _at_least(value: Any, n: int) -> bool:
    return await value >= n


async def test_the_charts_count_what_was_recorded_and_delivered(console: Console, api, receiver, database):
    await setup_callback(api, receiver)
    events = [{"type": "sent", "messageKey": f"s{n}"} for n in range(3)]
    events += [{"type": "delivered", "messageKey": f"d{n}"} for n in range(2)]
    status, _ = await api.post("/v1/events", {"events": events})
    assert status == 201
    await logged(database, 5)
    status, page = await console.get("/console/overview")
    assert status == 200
    assert summary(page, "events-chart").startswith("5 events in all (sent 3, delivered 2)")
    assert summary(page, "deliveries-chart").startswith("5 deliveries in all (succeeded 5, failed 0)")
    assert 'class="line series-0"' in page and "<title>" in page  # drawn, with tooltips
    assert '<th scope="col">sent</th><th scope="col">delivered</th>' in page  # the figures as a table
    assert figure(page, "queued") == "0" and figure(page, "oldest") == "—"


async def test_failed_requests_count_as_failed_deliveries(console: Console, api, receiver, database):
    await setup_callback(api, receiver)
    receiver.mode = "fail"
    await api.post("/v1/events", {"type": "sent", "messageKey": "will-fail"})
    await logged(database, 2)  # the first try and a retry
    status, page = await console.get("/console/overview")
    failed = re.search(r"failed (\d+)\)", summary(page, "deliveries-chart"))
    assert failed and int(failed[1]) >= 2, summary(page, "deliveries-chart")


async def test_the_window_chosen_bounds_the_figures(console: Console, api, database):
    """An event recorded 2 hours ago counts in the 6-hour window, not in the hour."""
    account = await database.pool.fetchval("SELECT id FROM accounts WHERE name = 'acme'")
    async with database.pool.acquire() as conn:
        await partitions.ensure(conn, start=partitions.today() - timedelta(days=1), days=2)
        await conn.execute(
            "INSERT INTO events (account_id, type, message_key, occurred_at, recorded_at) VALUES ($1, 'opened', 'old',"
            " now() - interval '2 hours', now() - interval '2 hours')",
            account,
        )
    await api.post("/v1/events", {"type": "sent", "messageKey": "new"})
    _, page = await console.get("/console/overview")
    assert summary(page, "events-chart").startswith("1 events in all (sent 1)")
    _, page = await console.get("/console/overview?window=6h")
    assert summary(page, "events-chart").startswith("2 events in all")
    assert re.search(r'window=6h" aria-current="true"', page)
    _, page = await console.get("/console/overview?window=7d")
    assert "in 60-minute periods (shown as per-minute rates)" in page
    _, page = await console.get("/console/overview?window=bogus")  # the default: one hour
    assert re.search(r'window=1h" aria-current="true"', page)


async def test_the_backlog_and_the_troubled_callbacks_are_shown_escaped(console: Console, api, receiver, database):
    callback_id, _ = await setup_callback(api, receiver, name=HOSTILE[0])
    await database.pool.execute(
        "UPDATE callbacks SET status = 'disabled', disabled_reason = $2, url = $3, failing_since = now()"
        " WHERE id = $1",
        int(callback_id[3:]), HOSTILE[1], HOSTILE[2],
    )  # fmt: skip
    status, _ = await api.post("/v1/events", {"events": [{"type": "sent", "messageKey": f"q{n}"} for n in range(3)]})
    assert status == 201
    await database.pool.execute("UPDATE queue SET next_attempt_at = now() - interval '90 seconds'")
    _, page = await console.get("/console/overview")
    assert figure(page, "queued") == "3" and figure(page, "due") == "3"
    assert re.fullmatch(r"(9\d|1\d\d) s|1 min", figure(page, "oldest")), figure(page, "oldest")
    assert f'href="/console/callbacks/{callback_id}"' in page
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'href="javascript:' not in page
    status, fragment = await console.get("/console/overview/backlog")
    assert status == 200 and "<html" not in fragment and 'data-figure="queued">3<' in fragment


async def test_another_accounts_activity_never_shows(console: Console, api, other_api, receiver, database):
    await setup_callback(other_api, receiver, name="globex-hook")
    await other_api.post("/v1/events", {"type": "sent", "messageKey": "globex"})
    await logged(database, 1)
    _, page = await console.get("/console/overview")
    assert summary(page, "events-chart") == "No events in this window."
    assert summary(page, "deliveries-chart") == "No deliveries in this window."
    assert "globex-hook" not in page


async def test_a_key_without_events_read_is_refused_and_sees_no_overview_link(app_client, database, api):
    c = Console(str(app_client.make_url("/")))
    await c.sign_in(await make_key(database, "acme", ["callbacks:manage"]))
    for path in ("/console/overview", "/console/overview/backlog"):
        status, _ = await c.get(path)
        assert status == 403, path
    _, page = await c.get("/console/keys")  # any page: the menu
    assert 'href="/console/overview"' not in page
    await c.close()


def test_a_chart_plots_per_minute_rates_whatever_its_buckets():
    from dispatcher.activity import Chart, Series
    from dispatcher.api.console.charts import nice_ceiling, plot

    start = datetime(2026, 1, 1, tzinfo=UTC)
    chart = Chart([start + timedelta(hours=n) for n in range(3)], 60, [Series("sent", [60, 0, 120], 60)])
    drawn = plot(chart, "Events", "events")
    assert [label for _, label in drawn.y_ticks] == ["0", "0.5", "1", "1.5", "2"]
    assert drawn.rows == [("00:00", ["1"]), ("02:00", ["2"])]
    assert "180 events in all (sent 180)" in drawn.summary and "2 events per minute" in drawn.summary
    assert [nice_ceiling(v) for v in (0, 1, 3, 7, 11, 240)] == [1, 1, 5, 10, 20, 250]
