"""The overview: events and deliveries per minute over a chosen window (1 h, 6 h, 24 h, 7 d), the pending
backlog with its oldest due delivery, and the failing and disabled callbacks. The backlog part is also a
fragment the page refreshes live (data-live-refresh)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from dispatcher import activity
from dispatcher.api.console.charts import plot
from dispatcher.api.console.pages import PAGES, View


def age(value: timedelta | None) -> str | None:
    """A wait as people say it: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    if value is None:
        return None
    seconds = int(value.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 60:
        return f"{minutes} min"
    if hours < 24:
        return f"{hours} h {minutes % 60} min"
    return f"{days} d {hours % 24} h"


async def _backlog(view: View, now: datetime) -> dict[str, Any]:
    backlog = await activity.backlog(view.db.read_pool, view.session.account_id)
    return {"backlog": backlog, "oldest_age": age(backlog.oldest_age(now))}


@PAGES.page("GET", "/overview", scope="events:read")
async def overview_page(view: View) -> web.StreamResponse:
    window = activity.WINDOWS.get(view.request.query.get("window", ""), activity.DEFAULT_WINDOW)
    now = datetime.now(UTC)
    pool, account = view.db.read_pool, view.session.account_id
    events = await activity.events_chart(pool, account, window, now)
    deliveries = await activity.deliveries_chart(pool, account, window, now)
    return view.render(
        "overview.html",
        active="/overview",
        window=window,
        windows=list(activity.WINDOWS.values()),
        end=window.bounds(now)[1],
        events_plot=plot(events, "Events per minute by type", "events"),
        deliveries_plot=plot(
            deliveries,
            "Deliveries per minute, succeeded and failed",
            "deliveries",
            css={"succeeded": "series-ok", "failed": "series-bad"},
        ),
        **await _backlog(view, now),
    )


@PAGES.page("GET", "/overview/backlog", scope="events:read")
async def backlog_fragment(view: View) -> web.StreamResponse:
    """The backlog section's content alone, for the page's live refresh."""
    return view.render("overview_backlog.html", **await _backlog(view, datetime.now(UTC)))
