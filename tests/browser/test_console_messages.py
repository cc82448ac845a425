"""Messages in Chromium: find a message by its key, read its timeline, see the deliveries its events
caused and open one's attempts ("what happened to message X, did my endpoint get it, and why not?");
at phone width, by keyboard alone, and with hostile data that must never run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from tests.browser.conftest import shot, sign_in
from tests.conftest import setup_callback, wait_until

HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "javascript:alert(1)"]


async def failing_message(api: Any, receiver: Any, key: str = "order-1001") -> str:
    """A sent message whose webhook the endpoint refuses until the schedule gives up; its callback id."""
    receiver.mode, receiver.fail_text = "fail", '{"error": "database is read-only"}'
    callback_id, _ = await setup_callback(api, receiver, name="orders-endpoint", event_types=["sent", "delivered"])
    status, _ = await api.post("/v1/events", {"events": [
        {"type": "queued", "messageKey": key, "recipient": "ann@example.com", "definitionKey": "receipt"},
        {"type": "sent", "messageKey": key, "recipient": "ann@example.com", "definitionKey": "receipt"},
        {"type": "delivered", "messageKey": key, "recipient": "ann@example.com", "definitionKey": "receipt",
         "data": {"mx": "mx.example.com", "smtpResponse": "250 2.0.0 OK"}},
        {"type": "sent", "messageKey": "order-1002", "recipient": "bob@example.com", "definitionKey": "receipt"},
    ]})  # fmt: skip
    assert status == 201

    async def failed() -> bool:
        _, body = await api.get(f"/v1/callbacks/{callback_id}/deliveries")
        return [d["status"] for d in body["deliveries"]] == ["failed"] * 3

    await wait_until(failed)
    return callback_id


async def test_find_a_message_read_its_timeline_and_why_its_webhook_failed(
    page: Page, api, receiver, screenshots: Path
):
    callback_id = await failing_message(api, receiver)
    await sign_in(page, api.key, "/console/messages")
    await expect(page.get_by_role("table")).to_contain_text("order-1002")
    await shot(page, screenshots, "messages")

    await page.get_by_label("messageKey").fill("order-1001")
    await page.get_by_role("button", name="Search").click()
    await expect(page).to_have_url(re.compile(r"/console/messages/order-1001$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Message order-1001")
    await expect(page.locator("dl.facts").first).to_contain_text("delivered")
    events = page.locator("li.event")
    await expect(events).to_have_count(3)
    await expect(events.nth(2)).to_contain_text("delivered")
    await events.nth(2).get_by_text("Data").click()
    await expect(events.nth(2).locator("pre.event-data")).to_contain_text('"smtpResponse": "250 2.0.0 OK"')
    await expect(events.nth(0)).to_contain_text("No deliveries")  # queued: not subscribed
    row = events.nth(1).get_by_role("row").filter(has_text="orders-endpoint")
    await expect(row).to_contain_text("failed")
    await expect(row).to_contain_text("HTTP 500")
    await expect(row.get_by_role("link", name="orders-endpoint")).to_have_attribute(
        "href", f"/console/callbacks/{callback_id}"
    )
    await shot(page, screenshots, "message-timeline")

    await row.get_by_role("link", name=re.compile("^Attempts")).click()
    await expect(page).to_have_url(re.compile(r"/console/deliveries/dlv_\d+$"))
    attempts = page.locator("li.attempt")
    await expect(attempts).to_have_count(4)
    first = attempts.first
    await expect(first.locator("pre.response-body")).to_have_text('{"error": "database is read-only"}')
    await first.get_by_text("Request body").click()
    await expect(first.locator("pre.request-body")).to_contain_text('"messageKey": "order-1001"')
    await first.get_by_text("Request headers").click()
    await expect(first.get_by_role("row").filter(has_text="webhook-signature")).to_contain_text("(not stored)")
    await shot(page, screenshots, "delivery")

    receiver.mode = "ok"
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Retry now").click()
    await expect(page.get_by_role("status")).to_have_text("The delivery is queued to be sent again now.")
    await wait_until(lambda: _succeeded(page))
    await expect(page.locator("li.attempt")).to_have_count(5)


async def _succeeded(page: Page) -> bool:
    await page.reload()
    return await page.locator("dl.facts .status-succeeded").count() == 1


async def test_a_pending_delivery_turns_into_its_outcome_without_a_reload(page: Page, api, receiver):
    receiver.mode, receiver.retry_after = "rate", "3"  # answered 429: due again in three seconds
    callback_id, _ = await setup_callback(api, receiver, name="busy-endpoint")
    await api.post("/v1/events", {"type": "sent", "messageKey": "order-9"})
    await receiver.wait_for(1)

    async def waiting() -> bool:
        _, body = await api.get(f"/v1/callbacks/{callback_id}/deliveries")
        return body["deliveries"][0]["status"] == "pending" and body["deliveries"][0]["attemptCount"] == 1

    await wait_until(waiting)
    await sign_in(page, api.key, "/console/messages/order-9")
    row = page.get_by_role("row").filter(has_text="busy-endpoint")
    await expect(row).to_contain_text("pending")
    await expect(row).to_contain_text("HTTP 429")
    receiver.mode = "ok"
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    await expect(row).to_contain_text("succeeded", timeout=20_000)
    await expect(row).to_contain_text("HTTP 200")
    assert navigations == []  # the row changed in place


async def test_a_search_by_recipient_and_type_pages_to_older_results(page: Page, api):
    await api.post("/v1/events", {"events": [
        {"type": "opened", "messageKey": f"m-{i:02}", "recipient": "ann@example.com"} for i in range(55)
    ]})  # fmt: skip
    await sign_in(page, api.key, "/console/messages")
    await page.get_by_label("Recipient").fill("ann@example.com")
    await page.get_by_label("Event type").select_option("opened")
    await page.get_by_role("button", name="Search").click()
    rows = page.locator("table.messages tbody tr")
    await expect(rows).to_have_count(50)
    await expect(rows.first).to_contain_text("m-54")
    await page.get_by_role("link", name="Older →").click()
    await expect(rows).to_have_count(5)
    await expect(rows.last).to_contain_text("m-00")
    await expect(page.get_by_label("Recipient")).to_have_value("ann@example.com")


async def test_the_search_form_works_by_keyboard_alone(page: Page, api, receiver):
    await api.post("/v1/events", {"type": "sent", "messageKey": "kb/1", "recipient": "ann@example.com"})
    await sign_in(page, api.key, "/console/messages")
    for _ in range(30):  # past the skip link, the navigation and sign-out, to the first field
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "key":
            break
    await expect(page.get_by_label("messageKey")).to_be_focused()
    await page.keyboard.type("kb/1")
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(r"/console/messages/kb%2F1$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Message kb/1")


async def test_messages_and_a_timeline_fit_a_phone(phone: Page, api, receiver, screenshots: Path):
    await failing_message(api, receiver, key="a-rather-long-message-key-for-a-narrow-screen-0123456789")
    await sign_in(phone, api.key, "/console/messages")
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    await expect(phone.get_by_label("messageKey")).to_be_visible()
    await shot(phone, screenshots, "messages-phone")
    await phone.get_by_role("link", name=re.compile("^a-rather-long")).first.click()
    await expect(phone.locator("li.event")).to_have_count(3)
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    await shot(phone, screenshots, "message-timeline-phone")


async def test_hostile_message_data_is_shown_as_text_and_never_runs(page: Page, api, receiver):
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    receiver.mode, receiver.fail_text = "fail", "".join(HOSTILE)
    await setup_callback(api, receiver, name=HOSTILE[1])
    for value in HOSTILE:
        status, _ = await api.post("/v1/events", {
            "type": "sent", "messageKey": value, "recipient": f"{value}@example.com", "definitionKey": value,
            "data": {"note": value, value: value},
        })  # fmt: skip
        assert status == 201
    await receiver.wait_for(3)
    await sign_in(page, api.key, "/console/messages")
    for value in HOSTILE:
        await expect(page.get_by_role("link", name=value, exact=True)).to_be_visible()
    await page.get_by_role("link", name=HOSTILE[1], exact=True).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Message {HOSTILE[1]}")
    await page.get_by_text("Data").click()
    await expect(page.locator("pre.event-data")).to_contain_text(HOSTILE[1])
    await page.get_by_role("link", name=re.compile("^Attempts")).click()
    await expect(page.locator("pre.response-body").first).to_have_text("".join(HOSTILE))
    assert await page.locator("img[src=x], script:not([src]), [onerror], a[href^='javascript:' i]").count() == 0
    assert dialogs == []
