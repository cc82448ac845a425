"""Callbacks in Chromium: see a failing callback, fix its receiver, press retry and watch the delivery
succeed without a reload; create a callback and complete its handshake; a phone's width; retry by
keyboard alone; hostile names, URLs, descriptions, event data and response bodies never run."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect

from tests.browser.conftest import shot, sign_in
from tests.conftest import setup_callback, wait_until

HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "javascript:alert(1)"]


async def failing_callback(api: Any, receiver: Any, name: str = "orders-endpoint") -> str:
    """A callback whose endpoint refused one delivery until the retry schedule gave up; its id."""
    callback_id, _ = await setup_callback(api, receiver, name=name)
    receiver.mode, receiver.fail_text = "fail", '{"error": "database is read-only"}'
    status, _ = await api.post("/v1/events", {"type": "delivered", "messageKey": "order-1001"})
    assert status == 201

    async def failed() -> bool:
        _, body = await api.get(f"/v1/callbacks/{callback_id}/deliveries")
        return [d["status"] for d in body["deliveries"]] == ["failed"]

    await wait_until(failed)
    return callback_id


async def test_fix_a_failing_callbacks_receiver_press_retry_and_watch_it_succeed_live(
    page: Page, api, receiver, screenshots: Path
):
    callback_id = await failing_callback(api, receiver)
    await sign_in(page, api.key, "/console/callbacks")
    row = page.get_by_role("row").filter(has_text="orders-endpoint")
    await expect(row).to_contain_text("0.0 %")  # of its requests in the last 24 hours
    await expect(row).to_contain_text("HTTP 500")
    await shot(page, screenshots, "callbacks")

    await row.get_by_role("link", name="orders-endpoint").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("orders-endpoint")
    delivery = page.locator("#deliveries").get_by_role("row").filter(has_text="order-1001")
    await expect(delivery).to_contain_text("failed")

    receiver.mode, receiver.hold = "ok", asyncio.Event()  # fixed; its answer waits until we look
    await delivery.get_by_role("button", name="Retry").click()
    await expect(page.get_by_text("The delivery is queued to be sent again now.")).to_be_visible()
    await expect(delivery).to_contain_text("pending")
    await expect(page.locator("[data-live-state]")).to_have_attribute("data-state", "live")
    await page.evaluate("window.stillThisPage = true")
    receiver.hold.set()
    await expect(delivery).to_contain_text("succeeded", timeout=15_000)
    assert await page.evaluate("window.stillThisPage === true")  # updated in place, no reload
    await page.reload()  # the attempt log and the figures are drawn by the server
    await expect(page.locator("#attempts-title + table")).to_contain_text("HTTP 200")
    await shot(page, screenshots, "callback")
    assert callback_id in page.url


async def test_create_a_callback_and_complete_its_handshake(page: Page, api, receiver, screenshots: Path):
    await sign_in(page, api.key, "/console/callbacks")
    await page.get_by_role("link", name="New callback").click()
    await page.get_by_label("Name").fill("billing")
    await page.get_by_label("URL").fill(receiver.url)
    await page.get_by_label("Description (optional)").fill("Invoices and receipts")
    await shot(page, screenshots, "callback-new")
    await page.get_by_role("button", name="Create callback").click()

    secret = page.locator("[data-secret]")
    await expect(secret).to_have_text(re.compile(r"^whsec_"))
    [request] = await receiver.wait_for(1, events_only=False)
    request.verify(await secret.inner_text())  # the key arrived signed with the secret shown
    await page.get_by_label("Verification key your endpoint received").fill(request.json["verificationKey"])
    await page.get_by_role("button", name="Verify").click()
    await expect(page.get_by_text("events flow to it now")).to_be_visible()
    await expect(page.locator("dl.facts").first).to_contain_text("active")
    await expect(page.locator("[data-secret]")).to_have_count(0)  # shown once

    await page.get_by_role("button", name="Send test event").click()
    await expect(page.get_by_text("A test event is on its way.")).to_be_visible()
    [sent] = await receiver.wait_for(1)
    assert sent.json["data"]["test"] is True


async def test_retry_is_reachable_and_operable_by_keyboard(page: Page, api, receiver):
    callback_id = await failing_callback(api, receiver)
    receiver.mode = "ok"
    await sign_in(page, api.key, f"/console/callbacks/{callback_id}")
    for _ in range(80):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.textContent.trim()") == "Retry":
            break
    retry = page.locator("#deliveries").get_by_role("button", name="Retry")
    await expect(retry).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.get_by_text("The delivery is queued to be sent again now.")).to_be_visible()

    async def succeeded() -> bool:
        _, body = await api.get(f"/v1/callbacks/{callback_id}/deliveries")
        return [d["status"] for d in body["deliveries"]] == ["succeeded"]

    await wait_until(succeeded)


async def test_callbacks_fit_a_phone(phone: Page, api, receiver, screenshots: Path):
    callback_id = await failing_callback(api, receiver, name="a-rather-long-callback-name-for-a-narrow-screen")
    await sign_in(phone, api.key, "/console/callbacks")
    await expect(phone.get_by_role("link", name="New callback")).to_be_visible()
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
    await shot(phone, screenshots, "callbacks-phone")
    await phone.goto(f"/console/callbacks/{callback_id}")
    await expect(phone.locator("#deliveries").get_by_role("button", name="Retry")).to_be_visible()
    assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
    await shot(phone, screenshots, "callback-phone")


async def test_hostile_callback_fields_are_shown_as_text_and_never_run(page: Page, api, receiver):
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    status, cb = await api.post("/v1/callbacks", {
        "name": HOSTILE[0] + HOSTILE[1], "url": receiver.url + "?javascript:alert(1)",
        "description": " ".join(HOSTILE),
    })  # fmt: skip
    assert status == 201, cb
    [request] = await receiver.wait_for(1, events_only=False)
    await api.post(f"/v1/callbacks/{cb['callbackId']}/verify", {"verificationKey": request.json["verificationKey"]})
    await api.post("/v1/subscriptions", {"name": "all", "callbackId": cb["callbackId"], "eventTypes": ["*"]})
    receiver.mode, receiver.fail_text = "fail", "".join(HOSTILE)
    await api.post("/v1/events", {"type": "sent", "messageKey": "m-1", "data": {"note": "".join(HOSTILE)}})
    await receiver.wait_for(1)

    await sign_in(page, api.key, "/console/callbacks")
    await page.get_by_role("link", name=HOSTILE[0] + HOSTILE[1]).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(HOSTILE[0] + HOSTILE[1])
    await expect(page.locator("dl.facts").first).to_contain_text(" ".join(HOSTILE))
    await page.locator("#attempts-title + table").get_by_role("link").first.click()
    await expect(page.locator("pre[data-response]")).to_have_text("".join(HOSTILE))
    await expect(page.locator("pre[data-request-body]")).to_contain_text("".join(HOSTILE).replace('"', '\\"'))
    assert await page.locator("img[src=x], script:not([src]), [onerror], a[href^='javascript:' i]").count() == 0
    assert dialogs == []
