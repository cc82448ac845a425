"""Hostile data in every field the console and the portal display: the browser crawls every page it can
reach by links and finds no injected element, no `javascript:` link and no script run (a CSP violation
or a dialog fails the test too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import Page

from tests.browser.conftest import sign_in
from tests.conftest import setup_callback

SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = '"><img src=x onerror=alert(1)>'
LINK = "javascript:alert(1)"
HOSTILE = f"{SCRIPT}{ATTRIBUTE}'><svg onload=alert(1)>{LINK}"
INJECTED = "img[src=x], svg[onload], script:not([src]), [onerror], [onload], a[href^='javascript:' i]"


async def seed(api: Any, receiver: Any) -> None:
    """Hostile text in names, descriptions, keys, recipients, event data, templates and webhook answers."""
    receiver.mode, receiver.fail_text = "fail", HOSTILE
    callback_id, _ = await setup_callback(api, receiver, name=HOSTILE[:90])  # its subscription adds "-sub"
    await api.patch(f"/v1/callbacks/{callback_id}", {"description": HOSTILE})
    status, _ = await api.post("/v1/events", {
        "type": "sent", "messageKey": HOSTILE, "recipient": "x@example.com", "definitionKey": "welcome",
        "data": {"html": SCRIPT, "link": LINK, "attribute": ATTRIBUTE, ATTRIBUTE: HOSTILE},
    })  # fmt: skip
    assert status == 201
    await receiver.wait_for(1)
    await api.post("/v1/definitions", {
        "definitionKey": "hostile", "name": HOSTILE,
        "content": {"subject": HOSTILE, "html": HOSTILE + "{{ name }}", "text": HOSTILE},
    })  # fmt: skip


async def crawl(page: Page, start: str, dialogs: list[str], limit: int = 80) -> list[str]:
    """Visit every same-base page reachable from `start` by links (GET only); return the paths seen."""
    base = start.rsplit("/", 1)[0]
    seen: list[str] = []
    todo = [start]
    while todo and len(seen) < limit:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.append(path)
        response = await page.goto(path)
        assert response is not None and response.status < 500, path
        injected = await page.locator(INJECTED).count()
        assert injected == 0, (path, await page.content())
        for href in await page.locator("a[href]").evaluate_all("links => links.map(a => a.getAttribute('href'))"):
            target = urlsplit(href)
            if not target.scheme and target.path.startswith(base) and "/static/" not in target.path:
                todo.append(target.path + (f"?{target.query}" if target.query else ""))
    assert dialogs == []
    return seen


async def test_hostile_data_is_inert_on_every_console_page(page: Page, api, receiver, screenshots: Path):
    await seed(api, receiver)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    await sign_in(page, api.key, "/console/overview")
    seen = await crawl(page, "/console/overview", dialogs)
    for section in ("/messages/%3Cscript", "/callbacks/cb_", "/attempts/att_", "/deliveries/dlv_",
                    "/subscriptions/sub_", "/definitions/hostile", "/sends", "/keys", "/live"):  # fmt: skip
        assert any(section in path for path in seen), (section, seen)


async def test_hostile_data_is_inert_on_every_portal_page(page: Page, api, receiver):
    await seed(api, receiver)
    status, link = await api.post("/v1/portal-links", {"all": True})
    assert status == 201
    path = urlsplit(link["url"]).path
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    seen = await crawl(page, path, dialogs)
    for section in ("/callbacks/new", "/callbacks/cb_", "/attempts/att_"):
        assert any(section in path for path in seen), (section, seen)
