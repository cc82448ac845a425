"""Subscriptions, Definitions and Sends in Chromium: editing and previewing a definition (a script in a
template never runs), creating a subscription, sending a draft, a phone's width, and the keyboard."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from dispatcher.sending import service
from tests.browser.conftest import shot, sign_in

DEFINITION = {
    "definitionKey": "welcome",
    "name": "Welcome mail",
    "content": {"from": "Shop <shop@example.com>", "subject": "Welcome, {{ attributes.name }}",
                "html": "<h1>Hello {{ attributes.name }}</h1><p>Your order {{ attributes.order }} is on its way.</p>",
                "text": "Hello {{ attributes.name }}"},
}  # fmt: skip


async def definition(api: Any, **content: str) -> None:
    status, body = await api.post("/v1/definitions", {**DEFINITION, "content": {**DEFINITION["content"], **content}})
    assert status == 201, body


async def store(database: Any, key: str, status: str, send_at: datetime | None = None) -> None:
    account = await database.pool.fetchval("SELECT id FROM accounts WHERE name = 'acme'")
    send = service.NewSend(key, "ann@example.com", {"recipient": {"to": "ann@example.com"}}, status,
                           send_at or datetime.now(UTC))  # fmt: skip
    async with database.pool.acquire() as conn:
        await service.accept(conn, account, "welcome", [send])
        await conn.execute(service.SQL["suppress"], account, "bounced@example.com", "bounced")


async def tab_to(page: Page, selector: str) -> None:
    """Press Tab until the element matching `selector` has the focus."""
    for _ in range(80):
        await page.keyboard.press("Tab")
        if await page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def no_dialogs(page: Page) -> list[str]:
    """Every dialog the page opens (alert, confirm), recorded and dismissed."""
    dialogs: list[str] = []

    async def record(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", record)
    return dialogs


async def test_edit_and_preview_a_definition(page: Page, api, screenshots: Path):
    await definition(api)
    await sign_in(page, api.key, "/console/definitions")
    await page.get_by_role("link", name="welcome", exact=True).click()
    await expect(page.get_by_role("heading", name="Definition welcome")).to_be_visible()
    await page.get_by_label("Subject").fill("Your order, {{ attributes.name }}")
    await page.get_by_label("Sample attributes").fill('{"name": "Ada", "order": "A-17"}')
    await page.get_by_role("button", name="Preview").click()
    await expect(page.locator('[data-preview="subject"]')).to_have_text("Your order, Ada")
    frame = page.frame_locator("iframe.preview-frame")
    await expect(frame.get_by_role("heading", name="Hello Ada")).to_be_visible()
    await expect(frame.locator("p")).to_have_text("Your order A-17 is on its way.")
    # A sandboxed frame is drawn by a process of its own: a shot of the frame waits until it is painted, so
    # the page's full shot shows the preview instead of an empty box.
    await page.locator("iframe.preview-frame").screenshot()
    await shot(page, screenshots, "definition")
    await page.get_by_role("button", name="Save definition").click()
    await expect(page.get_by_role("status")).to_have_text("The definition was saved.")
    status, got = await api.get("/v1/definitions/welcome")
    assert got["content"]["subject"] == "Your order, {{ attributes.name }}"


async def test_a_script_inside_a_previewed_template_does_not_run(page: Page, api):
    dialogs = no_dialogs(page)
    hostile = (
        "<p id='shown'>{{ attributes.name }}</p><script>alert('script')</script>"
        "<script>document.getElementById('shown').textContent = 'a script ran'</script>"
        "<img src=x onerror=\"alert('img')\"><a href=\"javascript:alert('link')\">link</a>"
    )
    await definition(api, html=hostile)
    await sign_in(page, api.key, "/console/definitions/welcome")
    await page.get_by_label("Sample attributes").fill('{"name": "<script>alert(\\"attr\\")</script>"}')
    await page.get_by_role("button", name="Preview").click()
    frame = page.frame_locator("iframe.preview-frame")
    # The frame rendered, the attribute arrived as text (escaped by the HTML environment), and neither the
    # template's scripts nor its event handler ran: no dialog, and the paragraph is as rendered.
    await expect(frame.locator("#shown")).to_have_text('<script>alert("attr")</script>')
    await expect(frame.get_by_role("link", name="link")).to_be_visible()
    await page.get_by_role("button", name="Preview").click()  # a second round trip: any late script had its turn
    await expect(frame.locator("#shown")).to_have_text('<script>alert("attr")</script>')
    assert dialogs == []
    assert await page.evaluate("document.querySelector('iframe.preview-frame').getAttribute('sandbox')") == ""


async def test_a_preview_draws_the_mails_inline_styles(page: Page, api):
    """The frame inherits the page's policy, which allows inline styles on the preview page alone: a styled
    mail looks as sent, and nothing is reported as a policy violation (the `page` fixture fails on one)."""
    styled = "<style>h1 { color: rgb(0, 128, 0) }</style><h1>Hi</h1><p style='color: rgb(255, 0, 0)'>{{ attributes.name }}</p>"
    await definition(api, html=styled)
    await sign_in(page, api.key, "/console/definitions/welcome")
    await page.get_by_label("Sample attributes").fill('{"name": "Ada"}')
    await page.get_by_role("button", name="Preview").click()
    frame = page.frame_locator("iframe.preview-frame")
    await expect(frame.locator("p")).to_have_css("color", "rgb(255, 0, 0)")
    await expect(frame.locator("h1")).to_have_css("color", "rgb(0, 128, 0)")


async def test_subscriptions_are_listed_and_created(page: Page, api, receiver, screenshots: Path):
    status, cb = await api.post("/v1/callbacks", {"name": "orders hook", "url": receiver.url})
    assert status == 201
    status, _ = await api.post(
        "/v1/subscriptions", {"name": "everything", "callbackId": cb["callbackId"], "eventTypes": ["*"]}
    )
    await sign_in(page, api.key, "/console/subscriptions")
    await page.get_by_label("Name").fill("bounces")
    await page.get_by_label("bounced").check()
    await page.get_by_label("complained").check()
    await page.get_by_label("Filter").fill('{"definitionKey": "welcome", "data.order.total": {"$gtt": 100}}')
    await page.get_by_role("button", name="Create subscription").click()
    refused = "filters.data.order.total.$gtt must be one of $eq, $ne, $in, $nin, $exists, $gt, $gte, $lt, $lte, $not"
    await expect(page.get_by_label("Filter")).to_have_accessible_description(re.compile(re.escape(refused)))
    await page.get_by_label("Filter").fill('{"definitionKey": "welcome", "data.order.total": {"$gte": 100}}')
    await page.get_by_role("button", name="Create subscription").click()
    await expect(page.get_by_role("status")).to_have_text("The subscription was created.")
    row = page.get_by_role("row").filter(has_text="bounces")
    await expect(row).to_contain_text("bounced, complained")
    await expect(row).to_contain_text('{"definitionKey": "welcome", "data.order.total": {"$gte": 100}}')
    await shot(page, screenshots, "subscriptions")
    await row.get_by_role("button", name="Pause").click()
    await expect(page.get_by_role("row").filter(has_text="bounces")).to_contain_text("paused")


async def test_sends_show_drafts_scheduled_sends_and_suppressions(page: Page, api, database, screenshots: Path):
    await definition(api)
    await store(database, "draft-1", "draft")
    await store(database, "later-1", "scheduled", datetime.now(UTC) + timedelta(days=1))
    await sign_in(page, api.key, "/console/sends")
    await expect(page.get_by_role("link", name="later-1")).to_be_visible()
    await expect(page.get_by_role("row").filter(has_text="bounced@example.com")).to_contain_text("bounced")
    await shot(page, screenshots, "sends")
    await page.get_by_role("row").filter(has_text="draft-1").get_by_role("button", name="Send").click()
    await expect(page.get_by_role("status")).to_have_text("The draft was queued for sending.")
    await expect(page.get_by_role("link", name="draft-1")).to_have_count(0)


async def test_the_views_fit_a_phone(phone: Page, api, database, receiver):
    await definition(api)
    await store(database, "draft-1", "draft")
    status, cb = await api.post("/v1/callbacks", {"name": "orders hook", "url": receiver.url})
    await api.post("/v1/subscriptions", {"name": "everything", "callbackId": cb["callbackId"], "eventTypes": ["*"]})
    await sign_in(phone, api.key, "/console/sends")
    for path in ("/console/sends", "/console/subscriptions", "/console/definitions", "/console/definitions/welcome"):
        await phone.goto(path)
        overflow = await phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)
    await expect(phone.get_by_role("button", name="Preview")).to_be_visible()


async def test_the_keyboard_alone_edits_a_definition(page: Page, api):
    await definition(api)
    await sign_in(page, api.key, "/console/definitions/welcome")

    await tab_to(page, "#def-subject")
    await page.keyboard.press("Control+A")
    await page.keyboard.type("Typed with keys")
    await tab_to(page, ".definition-form button[type=submit]:not([formaction])")  # Save, not Preview
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status")).to_have_text("The definition was saved.")
    await expect(page).to_have_url(re.compile(r"/console/definitions/welcome\?done=saved$"))
    assert (await api.get("/v1/definitions/welcome"))[1]["content"]["subject"] == "Typed with keys"


async def test_the_keyboard_alone_creates_a_subscription_and_sends_a_draft(page: Page, api, database, receiver):
    status, cb = await api.post("/v1/callbacks", {"name": "orders hook", "url": receiver.url})
    await definition(api)
    await store(database, "draft-1", "draft")
    await sign_in(page, api.key, "/console/subscriptions")
    await tab_to(page, "#sub-name")
    await page.keyboard.type("by keys")
    await tab_to(page, "input[value=sent]")
    await page.keyboard.press("Space")
    await tab_to(page, "form.config-form button[type=submit]")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status")).to_have_text("The subscription was created.")
    assert [s["name"] for s in (await api.get("/v1/subscriptions"))[1]["subscriptions"]] == ["by keys"]
    await page.goto("/console/sends")
    await tab_to(page, "form[action='/console/sends/send-draft'] button")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status")).to_have_text("The draft was queued for sending.")
