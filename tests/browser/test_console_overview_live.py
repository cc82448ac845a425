"""The overview and the live view in Chromium: charts drawn, the backlog refreshed live, new events shown
without a reload, a cut stream shown as reconnecting and then resumed; keyboard, phone width, and hostile
data shown as text."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from dispatcher.api.console.live import LIVE_HUB
from tests.browser.conftest import shot, sign_in
from tests.conftest import setup_callback

HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "javascript:alert(1)"]
INJECTED = "img[src=x], script:not([src]), [onerror], a[href^='javascript:' i]"


def record_dialogs(page: Page) -> list[str]:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    return dialogs


async def no_horizontal_scroll(page: Page) -> bool:
    return await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


async def test_the_overview_draws_its_charts_and_lists_troubled_callbacks(page: Page, api, receiver, screenshots: Path):
    await setup_callback(api, receiver, name="orders")
    events = [{"type": t, "messageKey": f"m{n}"} for n, t in enumerate(["sent"] * 4 + ["delivered"] * 3 + ["opened"])]
    await api.post("/v1/events", {"events": events})
    await receiver.wait_for(len(events))
    await sign_in(page, api.key, "/console/overview")
    charts = page.get_by_role("img")
    await expect(charts).to_have_count(2)
    await expect(page.get_by_role("img", name="Events per minute by type")).to_be_visible()
    await expect(page.locator("ul.legend").first).to_contain_text("sent")
    await page.get_by_text("The figures as a table").first.click()
    await expect(page.get_by_role("table").filter(has_text="Events per minute by type").first).to_be_visible()
    await shot(page, screenshots, "overview")


async def test_the_window_is_chosen_with_the_keyboard(page: Page, api):
    await sign_in(page, api.key, "/console/overview")
    link = page.get_by_role("link", name="24 hours")
    for _ in range(40):
        await page.keyboard.press("Tab")
        if await link.evaluate("el => el === document.activeElement"):
            break
    await expect(link).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(r"window=24h"))
    await expect(page.get_by_role("link", name="24 hours")).to_have_attribute("aria-current", "true")


async def test_the_overview_fits_a_phone(phone: Page, api, receiver, screenshots: Path):
    await setup_callback(api, receiver)
    await api.post("/v1/events", {"type": "sent", "messageKey": "phone"})
    await sign_in(phone, api.key, "/console/overview")
    await expect(phone.get_by_role("img", name="Events per minute by type")).to_be_visible()
    assert await no_horizontal_scroll(phone)
    await shot(phone, screenshots, "overview-phone")


async def test_the_backlog_refreshes_itself_when_deliveries_queue(page: Page, api, receiver, database):
    """data-live-refresh: the backlog section is refetched when the stream reports a change."""
    callback_id, _ = await setup_callback(api, receiver, name=HOSTILE[0])
    await database.pool.execute(
        "UPDATE callbacks SET status = 'disabled', disabled_reason = $2 WHERE id = $1", int(callback_id[3:]), HOSTILE[1]
    )
    dialogs = record_dialogs(page)
    await sign_in(page, api.key, "/console/overview")
    pending = page.locator('[data-figure="queued"]')
    await expect(pending).to_have_text("0")
    await expect(page.get_by_role("link", name=HOSTILE[0])).to_be_visible()  # shown as text
    await api.post("/v1/events", {"type": "sent", "messageKey": "stuck"})  # queued behind the disabled callback
    await expect(pending).to_have_text("1")
    assert await page.locator(INJECTED).count() == 0
    assert dialogs == []


async def test_a_change_between_the_pages_rendering_and_its_stream_shows_up(page: Page, api, receiver, database):
    """A delivery queued after the overview was rendered but before its stream started is shown anyway."""
    callback_id, _ = await setup_callback(api, receiver)
    await database.pool.execute("UPDATE callbacks SET status = 'disabled' WHERE id = $1", int(callback_id[3:]))

    async def queue_one_first(route: Any) -> None:  # the stream's request waits until the event is recorded
        await api.post("/v1/events", {"type": "sent", "messageKey": "in-between"})
        await route.continue_()

    await page.route(re.compile(r"/live/stream"), queue_one_first)
    await sign_in(page, api.key, "/console/overview")
    await expect(page.locator('[data-figure="queued"]')).to_have_text("1")


async def test_the_live_page_shows_a_new_event_without_a_reload(page: Page, api, receiver, screenshots: Path):
    await setup_callback(api, receiver, name="orders")
    await api.post("/v1/events", {"type": "sent", "messageKey": "before"})
    await receiver.wait_for(1)
    await sign_in(page, api.key, "/console/live")
    await expect(page.get_by_role("status")).to_have_text(re.compile("^Live"))
    await expect(page.locator("#live-events ~ table")).to_contain_text("before")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    await api.post("/v1/events", {"type": "delivered", "messageKey": "after", "recipient": "r@example.com"})
    events = page.locator('[data-live-list="events"] tr')
    await expect(events.first).to_contain_text("after")
    await expect(page.locator('[data-live-list="outcomes"] tr').first).to_contain_text("orders")
    await expect(page.locator('[data-live-list="outcomes"] tr')).to_have_count(2)
    assert navigations == []  # no reload
    await shot(page, screenshots, "live")


async def test_a_cut_stream_shows_reconnecting_and_then_resumes(page: Page, api, app_client: Any):
    await sign_in(page, api.key, "/console/live")
    state = page.get_by_role("status")
    await expect(state).to_have_text(re.compile("^Live"))
    app_client.server.app[LIVE_HUB].end_streams()
    await expect(state).to_have_text("Reconnecting…")
    await expect(state).to_have_text(re.compile("^Live"))
    await api.post("/v1/events", {"type": "sent", "messageKey": "after-the-cut"})
    await expect(page.locator('[data-live-list="events"] tr').first).to_contain_text("after-the-cut")


async def test_hostile_event_data_arrives_live_as_text(page: Page, api):
    dialogs = record_dialogs(page)
    await sign_in(page, api.key, "/console/live")
    await expect(page.get_by_role("status")).to_have_text(re.compile("^Live"))
    for value in HOSTILE:
        status, _ = await api.post(
            "/v1/events", {"type": "sent", "messageKey": value, "recipient": value, "data": {value: value}}
        )
        assert status == 201
    rows = page.locator('[data-live-list="events"] tr')
    await expect(rows).to_have_count(3)
    await expect(rows.first).to_contain_text(HOSTILE[2])
    await expect(rows.nth(2)).to_contain_text(HOSTILE[0])
    assert await page.locator(INJECTED).count() == 0
    assert dialogs == []


async def test_the_live_page_fits_a_phone(phone: Page, api):
    await api.post("/v1/events", {"type": "sent", "messageKey": "on-a-phone-" + "x" * 60})
    await sign_in(phone, api.key, "/console/live")
    await expect(phone.get_by_role("status")).to_have_text(re.compile("^Live"))
    assert await no_horizontal_scroll(phone)
