"""Browser tests: Playwright driving Debian's Chromium (/usr/bin/chromium; `make test` and .ci/run
install it). Every page is watched for Content-Security-Policy violations and script errors, which
fail the test. Screenshots go to $DISPATCHER_SCREENSHOTS (`make screenshots` sets docs/img)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = os.environ.get("DISPATCHER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("DISPATCHER_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not at {CHROMIUM}: `apt-get install chromium` (make test does it)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        await launched.close()


class Watched:
    """A page and what went wrong on it: CSP violations, uncaught script errors."""

    def __init__(self, page: Page):
        self.page = page
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda err: self.problems.append(f"script error: {err}"))

    def _console(self, message: Any) -> None:
        if message.type == "error" and ("Content Security Policy" in message.text or "Refused" in message.text):
            self.problems.append(message.text)


async def open_page(browser: Browser, base_url: str, **options: Any) -> tuple[Page, Watched]:
    context = await browser.new_context(base_url=base_url, **options)
    page = await context.new_page()
    return page, Watched(page)


@pytest.fixture
async def page(browser: Browser, app_client: Any) -> AsyncIterator[Page]:
    page, watched = await open_page(browser, str(app_client.make_url("")).rstrip("/"))
    yield page
    await page.context.close()
    assert watched.problems == []


@pytest.fixture
async def phone(browser: Browser, app_client: Any) -> AsyncIterator[Page]:
    """A narrow, touch-sized page."""
    page, watched = await open_page(
        browser, str(app_client.make_url("")).rstrip("/"), viewport=PHONE, is_mobile=True, has_touch=True
    )
    yield page
    await page.context.close()
    assert watched.problems == []


async def sign_in(page: Page, key: str, path: str = "/console") -> None:
    await page.goto(f"/console/sign-in?next={path}")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"**{path}*")


async def shot(page: Page, screenshots: Path, name: str) -> None:
    await page.screenshot(path=screenshots / f"{name}.png", full_page=True)
