"""A browser-less console client for integration tests: its own cookie jar, the CSRF token read from
the last page, forms posted as a browser posts them. Browser tests (tests/browser) use Chromium."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Console:
    def __init__(self, base_url: str, cookies: bool = True):
        self.base = base_url.rstrip("/")
        jar: aiohttp.abc.AbstractCookieJar = aiohttp.CookieJar(unsafe=True) if cookies else aiohttp.DummyCookieJar()
        self.http = aiohttp.ClientSession(cookie_jar=jar)
        self.csrf = ""

    async def close(self) -> None:
        await self.http.close()

    async def get(self, path: str, **kw: Any) -> tuple[int, str]:
        async with self.http.get(self.base + path, allow_redirects=kw.pop("follow", True), **kw) as resp:
            text = await resp.text()
            self.last = resp
        found = _CSRF.search(text)
        if found:
            self.csrf = found[1]
        return resp.status, text

    async def post(
        self, path: str, data: dict[str, Any] | list[tuple[str, str]] | None = None, **kw: Any
    ) -> tuple[int, str]:
        form = aiohttp.FormData(list(data.items()) if isinstance(data, dict) else (data or []))
        if kw.pop("csrf", True):
            form.add_field("csrf", self.csrf)
        async with self.http.post(self.base + path, data=form, allow_redirects=kw.pop("follow", True), **kw) as resp:
            text = await resp.text()
            self.last = resp
        found = _CSRF.search(text)
        if found:
            self.csrf = found[1]
        return resp.status, text

    async def sign_in(self, key: str, next_path: str = "/console") -> tuple[int, str]:
        """Sign in; returns the answer's status and where it sends the browser."""
        await self.get("/console/sign-in")
        status, _ = await self.post("/console/sign-in", {"key": key, "next": next_path}, follow=False)
        return status, self.last.headers.get("Location", "")
