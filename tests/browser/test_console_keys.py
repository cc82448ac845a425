"""Signing in and out, and API keys, in Chromium."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.async_api import Page, expect

from tests.browser.conftest import shot, sign_in


async def test_a_person_signs_in_with_a_key_and_out_again(page: Page, api, screenshots: Path):
    await page.goto("/console/keys")
    await expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
    await shot(page, screenshots, "sign-in")
    await page.get_by_label("API key").fill("dk_wrong")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("That API key is not valid.")
    await page.get_by_label("API key").fill(api.key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(r"/console/keys$"))
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/console/sign-in$"))
    await page.goto("/console/keys")
    await expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))


async def test_a_new_key_is_shown_once_and_can_be_revoked(page: Page, api, screenshots: Path):
    await sign_in(page, api.key, "/console/keys")
    await page.get_by_label("events:read").check()
    await page.get_by_role("button", name="Create key").click()
    secret = page.locator("[data-secret]")
    await expect(secret).to_have_text(re.compile(r"^dk_"))
    await shot(page, screenshots, "keys")
    key = await secret.inner_text()
    await page.goto("/console/keys")
    await expect(page.locator("body")).not_to_contain_text(key)
    row = page.get_by_role("row").filter(has_text=key[:10])
    page.once("dialog", lambda dialog: dialog.accept())
    await row.get_by_role("button", name="Revoke").click()
    await expect(page.get_by_role("status")).to_have_text("The key was revoked.")
    await expect(page.get_by_role("row").filter(has_text=key[:10])).to_contain_text("revoked")


async def test_the_keyboard_alone_signs_in(page: Page, api):
    await page.goto("/console/sign-in?next=/console/keys")
    # The key field takes the focus by itself; wait for it, as a person would, before typing.
    await expect(page.get_by_label("API key")).to_be_focused()
    await page.keyboard.type(api.key)
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(r"/console/keys$"))
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
