"""The portal an app embeds for its own customers, in Chromium: inside an iframe on another origin it
shows only the link's callbacks; the console itself refuses to be framed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, expect
from yarl import URL

from tests.browser.conftest import open_page, shot
from tests.conftest import setup_callback, wait_until
from tests.receiver import Receiver


@pytest.fixture
async def embedding_app() -> AsyncIterator[Any]:
    """Another origin (its own port) whose page embeds a URL in an iframe: `/?src=<url>`."""

    async def page(request: web.Request) -> web.Response:
        src = request.query["src"]
        body = f'<!doctype html><title>Your app</title><h1>Your app</h1><iframe src="{src}" width="1000" height="700" title="Webhooks"></iframe>'
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    await runner.cleanup()


@pytest.fixture
async def second_receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def test_a_portal_link_in_an_iframe_on_another_origin_shows_only_its_callbacks(
    page: Page, app_client, api, receiver, second_receiver, embedding_app, screenshots: Path
):
    mine, _ = await setup_callback(api, receiver, name="Customer endpoint")
    await setup_callback(api, second_receiver, name="Internal audit hook")
    status, link = await api.post("/v1/portal-links", {"callbackIds": [mine], "expiresIn": 900})
    assert status == 201
    portal = str(app_client.make_url(URL(link["url"]).path))  # the tests' DISPATCHER_PUBLIC_URL is not served
    await page.goto(f"{embedding_app}/?src={portal}")
    frame = page.frame_locator("iframe")
    await expect(frame.get_by_role("link", name="Customer endpoint")).to_be_visible()
    await expect(frame.locator("body")).not_to_contain_text("Internal audit hook")
    await expect(frame.get_by_role("link", name="Overview")).to_have_count(0)  # callbacks only
    await shot(page, screenshots, "portal")
    await frame.get_by_role("link", name="Customer endpoint").click()
    await expect(frame.get_by_role("heading", name=re.compile("Customer endpoint"))).to_be_visible()


async def test_the_console_cannot_be_framed(browser: Browser, app_client, embedding_app):
    base = str(app_client.make_url("")).rstrip("/")
    page, _ = await open_page(browser, embedding_app)  # its CSP report is the expected outcome here
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "frame-ancestors" in m.text else None)
    await page.goto(f"/?src={base}/console/sign-in")

    async def was_refused() -> bool:
        return bool(refused)

    await wait_until(was_refused)
    await expect(page.frame_locator("iframe").get_by_label("API key")).to_have_count(0)
    await page.context.close()
