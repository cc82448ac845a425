"""Signing in to the console: a server-side session in a strict cookie, CSRF on every change, sign-out,
idle expiry, the key's scopes, and headers that keep the pages from being framed or injected."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from yarl import URL

from dispatcher import sessions
from tests.conftest import make_key
from tests.console import Console


@pytest.fixture
async def console(app_client: Any) -> AsyncIterator[Console]:
    c = Console(str(app_client.make_url("/")))
    yield c
    await c.close()


@pytest.fixture
async def second_console(app_client: Any) -> AsyncIterator[Console]:
    c = Console(str(app_client.make_url("/")))
    yield c
    await c.close()


async def sessions_in_db(database: Any) -> int:
    return await database.pool.fetchval("SELECT count(*) FROM console_sessions")


async def test_a_page_without_a_session_sends_the_browser_to_sign_in(console: Console):
    status, _ = await console.get("/console/keys?x=1", follow=False)
    assert status == 303
    location = URL(console.last.headers["Location"])
    assert (location.path, location.query["next"]) == ("/console/sign-in", "/console/keys?x=1")


async def test_signing_in_with_a_key_starts_a_session_in_an_httponly_strict_cookie(console: Console, database, api):
    status, location = await console.sign_in(api.key, "/console/keys")
    assert (status, location) == (303, "/console/keys")
    cookie = console.last.headers["Set-Cookie"]
    assert "dispatcher_console=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/console" in cookie and "Secure" not in cookie  # plain http here
    assert api.key not in cookie
    assert await sessions_in_db(database) == 1
    status, page = await console.get("/console/keys")
    assert status == 200 and "API keys" in page


async def test_the_cookie_is_secure_when_the_console_is_reached_over_https(console: Console, api):
    await console.get("/console/sign-in")
    await console.post("/console/sign-in", {"key": api.key}, follow=False, headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in console.last.headers["Set-Cookie"]


async def test_a_wrong_key_is_refused_and_starts_no_session(console: Console, database, api):
    status, _ = await console.sign_in("dk_" + "x" * 43)
    assert status == 401
    status, page = await console.get("/console/sign-in")
    assert await sessions_in_db(database) == 0


async def test_sign_in_refuses_a_form_without_its_own_token(console: Console, database, api):
    await console.get("/console/sign-in")
    status, page = await console.post("/console/sign-in", {"key": api.key}, csrf=False, follow=False)
    assert status == 403 and "expired" in page
    assert await sessions_in_db(database) == 0


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/console\\@evil.example"])
async def test_sign_in_never_redirects_to_another_site(console: Console, api, target: str):
    status, location = await console.sign_in(api.key, target)
    assert (status, location) == (303, "/console")


async def test_a_state_change_without_the_csrf_token_is_refused(console: Console, database, api):
    await console.sign_in(api.key)
    status, page = await console.post("/console/keys", {"scope": "events:read"}, csrf=False)
    assert status == 403
    assert await database.pool.fetchval("SELECT count(*) FROM api_keys") == 1


async def test_a_state_change_from_another_origin_is_refused_even_with_the_token(console: Console, database, api):
    await console.sign_in(api.key)
    await console.get("/console/keys")
    status, _ = await console.post(
        "/console/keys", {"scope": "events:read"}, headers={"Origin": "https://evil.example"}
    )
    assert status == 403
    assert await database.pool.fetchval("SELECT count(*) FROM api_keys") == 1


async def test_sign_out_ends_the_session_on_the_server(console: Console, database, api):
    await console.sign_in(api.key)
    await console.get("/console/keys")
    cookie = console.http.cookie_jar.filter_cookies(console.last.url)["dispatcher_console"].value
    status, _ = await console.post("/console/sign-out", follow=False)
    assert status == 303 and console.last.headers["Location"] == "/console/sign-in"
    assert await sessions_in_db(database) == 0
    # the old cookie, replayed, opens nothing
    replay = Console(console.base, cookies=False)
    try:
        status, _ = await replay.get("/console/keys", follow=False, headers={"Cookie": f"dispatcher_console={cookie}"})
    finally:
        await replay.close()
    assert status == 303


async def test_an_idle_session_ends(console: Console, database, api):
    await console.sign_in(api.key)
    assert (await console.get("/console/keys", follow=False))[0] == 200
    await database.pool.execute("UPDATE console_sessions SET last_seen_at = now() - interval '31 minutes'")
    status, _ = await console.get("/console/keys", follow=False)
    assert status == 303 and console.last.headers["Location"].startswith("/console/sign-in")


async def test_each_request_keeps_a_session_alive(console: Console, database, api):
    await console.sign_in(api.key)
    await database.pool.execute("UPDATE console_sessions SET last_seen_at = now() - interval '29 minutes'")
    assert (await console.get("/console/keys", follow=False))[0] == 200
    assert await database.pool.fetchval("SELECT last_seen_at > now() - interval '1 minute' FROM console_sessions")


async def test_revoking_the_key_ends_its_console_sessions(console: Console, second_console: Console, database, api):
    admin = await make_key(database, "acme")
    await console.sign_in(api.key)
    await second_console.sign_in(admin)
    await second_console.get("/console/keys")
    key_id = await database.pool.fetchval("SELECT id FROM api_keys ORDER BY id LIMIT 1")
    status, page = await second_console.post(f"/console/keys/{key_id}/revoke")
    assert status == 200 and "The key was revoked." in page
    status, _ = await console.get("/console/keys", follow=False)
    assert status == 303


async def test_the_purger_forgets_expired_sessions(console: Console, database, api, settings):
    from dispatcher.retention import Purger

    await console.sign_in(api.key)
    await database.pool.execute("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
    purger = Purger(database, settings)
    assert (await purger.purge())["sessions"] == 1
    assert await sessions_in_db(database) == 0


async def test_a_key_without_a_scope_is_not_offered_its_pages_and_is_refused_them(console: Console, database):
    reader = await make_key(database, "acme", ["events:read"])
    await console.sign_in(reader)
    status, page = await console.get("/console/keys")
    assert status == 403
    assert 'href="/console/keys"' not in page and 'href="/console/callbacks"' not in page
    status, _ = await console.post("/console/keys", {"scope": "*"})
    assert status == 403
    assert await database.pool.fetchval("SELECT count(*) FROM api_keys") == 1


async def test_console_pages_forbid_framing_and_inline_scripts(console: Console, api):
    for path in ("/console/sign-in", "/console/keys"):
        if path == "/console/keys":
            await console.sign_in(api.key)
        assert (await console.get(path))[0] == 200
        headers = console.last.headers
        csp = headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"


async def test_a_key_is_shown_once_at_creation_and_stored_only_as_a_hash(console: Console, database, api):
    await console.sign_in(api.key)
    await console.get("/console/keys")
    status, page = await console.post("/console/keys", [("scope", "events:read"), ("scope", "events:write")])
    assert status == 200
    [key] = re.findall(r"dk_[A-Za-z0-9_-]{43}", page)
    row = await database.pool.fetchrow("SELECT scopes, prefix FROM api_keys ORDER BY id DESC LIMIT 1")
    assert row["scopes"] == ["events:read", "events:write"] and key.startswith(row["prefix"])
    status, listing = await console.get("/console/keys")
    assert key not in listing and row["prefix"] in listing
    async with console.http.get(console.base + "/v1/events", headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status == 200  # the key works


async def test_keys_of_another_account_cannot_be_revoked(console: Console, database, api):
    other = await make_key(database, "globex")
    other_id = await database.pool.fetchval("SELECT id FROM api_keys WHERE prefix = $1", other[:10])
    await console.sign_in(api.key)
    await console.get("/console/keys")
    status, page = await console.post(f"/console/keys/{other_id}/revoke")
    assert status == 404
    assert await database.pool.fetchval("SELECT revoked_at FROM api_keys WHERE id = $1", other_id) is None
    assert other[:10] not in (await console.get("/console/keys"))[1]


async def test_a_session_can_be_resumed_only_with_its_token(database, api):
    row = await database.pool.fetchrow("SELECT id, account_id FROM api_keys LIMIT 1")
    from datetime import timedelta

    token, _ = await sessions.start(
        database.pool, account_id=row["account_id"], kind="console", scopes=("*",), key_id=row["id"],
        lifetime=timedelta(hours=1),
    )  # fmt: skip
    idle = timedelta(minutes=30)
    found = await sessions.resume(database.pool, token, kind="console", idle=idle)
    assert found is not None and found.account_id == row["account_id"]
    assert await sessions.resume(database.pool, token + "x", kind="console", idle=idle) is None
    assert await sessions.resume(database.pool, token, kind="portal", idle=idle) is None


@pytest.mark.parametrize(
    ("scopes", "status", "first"),
    [(["events:read"], 303, "/console/overview"), (["messages:send"], 303, "/console/definitions"),
     (["callbacks:manage"], 303, "/console/callbacks"), (["events:write"], 403, None)],
)  # fmt: skip
async def test_the_console_opens_on_the_first_section_the_key_may_see(
    console: Console, database, scopes: list[str], status: int, first: str | None
):
    await console.sign_in(await make_key(database, "acme", scopes))
    assert (await console.get("/console", follow=False))[0] == status
    assert console.last.headers.get("Location") == first
