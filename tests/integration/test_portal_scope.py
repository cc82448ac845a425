"""A portal link reaches its account's chosen callbacks and nothing else, proved route by route: every
page the portal serves is asked about a callback outside the link (the same account's, another
account's) and answers 404 without changing anything."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from yarl import URL

from tests.conftest import setup_callback, wait_until
from tests.console import Console
from tests.receiver import Receiver

PARAM = re.compile(r"\{(\w+)\}")


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    started = [await Receiver().start() for _ in range(3)]
    yield started
    for r in started:
        await r.stop()


async def delivered(api: Any, receiver: Receiver, name: str) -> dict[str, str]:
    """A verified callback that has one delivery with one attempt: its ids."""
    callback_id, _ = await setup_callback(api, receiver, name=name)
    status, _ = await api.post("/v1/events", {"type": "sent", "messageKey": f"order-{uuid.uuid4().hex}"})
    assert status == 201

    async def attempted() -> Any:
        status, body = await api.get(f"/v1/callbacks/{callback_id}/attempts")
        return body["attempts"] if status == 200 and body["attempts"] else None

    [attempt] = await wait_until(attempted)
    status, body = await api.get(f"/v1/callbacks/{callback_id}/deliveries")
    [delivery] = body["deliveries"]
    return {"callbackId": callback_id, "deliveryId": delivery["deliveryId"], "attemptId": attempt["attemptId"]}


async def snapshot(database: Any) -> list[Any]:
    """Everything a portal action could change, for every callback."""
    return [
        [
            tuple(r)
            for r in await database.pool.fetch(
                "SELECT id, name, url, status, secrets_version, paused_until, verification_sent_at, updated_at"
                " FROM callbacks ORDER BY id"
            )
        ],
        await database.pool.fetchval("SELECT count(*) FROM queue"),
        await database.pool.fetchval("SELECT count(*) FROM events"),
        await database.pool.fetchval("SELECT count(*) FROM callback_secrets"),
    ]


@pytest.fixture
async def portal(app_client: Any, api: Any, other_api: Any, receivers: list[Receiver]) -> AsyncIterator[Any]:
    mine = await delivered(api, receivers[0], "mine")
    sibling = await delivered(api, receivers[1], "sibling")
    theirs = await delivered(other_api, receivers[2], "theirs")
    status, link = await api.post("/v1/portal-links", {"callbackIds": [mine["callbackId"]]})
    assert status == 201
    base = URL(link["url"]).path.rsplit("/callbacks", 1)[0]
    client = Console(str(app_client.make_url("/")), cookies=False)
    client.portal_base = base  # type: ignore[attr-defined]
    yield client, base, mine, sibling, theirs
    await client.close()


def portal_routes(app: Any) -> list[tuple[str, str]]:
    return sorted(
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/portal/{token}/")
        and route.method != "HEAD"
    )  # fmt: skip


def fill(path: str, base: str, ids: dict[str, str], mine: dict[str, str]) -> str:
    """The route's path with `ids` for every parameter; a route naming a callback and something under it
    gets my callback with the other's delivery or attempt as well as the other's callback."""
    out = path.replace("/portal/{token}", base)
    for name in PARAM.findall(out):
        assert name in ids, f"the test knows no value for {{{name}}} in {path}: add it"
        out = out.replace("{" + name + "}", ids[name])
    return out


async def test_the_portal_serves_callbacks_their_deliveries_and_the_live_stream_only(app_client: Any):
    routes = portal_routes(app_client.app)
    assert len(routes) >= 10
    assert {path.split("/")[3] for _, path in routes} == {"callbacks", "deliveries", "live"}


async def test_every_portal_route_answers_404_for_callbacks_outside_the_link(app_client, database, portal):
    client, base, mine, sibling, theirs = portal
    await client.get(f"{base}/callbacks/{mine['callbackId']}")
    assert client.csrf
    before = await snapshot(database)
    checked = 0
    for method, path in portal_routes(app_client.app):
        if not PARAM.search(path.replace("{token}", "")):
            continue
        targets = [sibling, theirs]
        if "{callbackId}" in path and len(PARAM.findall(path)) > 2:  # {token}, my callback, someone else's child
            targets += [{**other, "callbackId": mine["callbackId"]} for other in (sibling, theirs)]
        for ids in targets:
            url = fill(path, base, ids, mine)
            if method == "GET":
                status, page = await client.get(url)
            else:
                status, page = await client.post(url, {"since": "2000-01-01T00:00", "verificationKey": "x"})
            assert status == 404, (method, url, status, page[:300])
            for other in (sibling, theirs):
                assert other["callbackId"] not in page or other["callbackId"] in url
            checked += 1
    assert checked >= 20
    assert await snapshot(database) == before


async def test_every_portal_route_works_for_the_links_own_callback(app_client, portal):
    client, base, mine, sibling, theirs = portal
    for method, path in portal_routes(app_client.app):
        # the live stream never ends (test_console_live.py checks what a portal's carries)
        if method != "GET" or path.endswith("/live/stream"):
            continue
        status, page = await client.get(fill(path, base, mine, mine))
        assert status == 200, (path, page[:300])
        assert "sibling" not in page and "theirs" not in page


async def test_the_portal_lists_only_the_links_callbacks(portal):
    client, base, mine, sibling, theirs = portal
    status, page = await client.get(f"{base}/callbacks")
    assert status == 200 and "mine" in page
    assert sibling["callbackId"] not in page and theirs["callbackId"] not in page
    assert "sibling" not in page and "theirs" not in page


async def test_a_callback_added_through_the_portal_joins_the_link(portal, database):
    client, base, mine, sibling, theirs = portal
    await client.get(f"{base}/callbacks/new")
    status, page = await client.post(
        f"{base}/callbacks", {"name": "added", "url": "http://127.0.0.1:9/added", "types": "sent"}
    )
    assert status in (200, 201), page[:300]
    added = await database.pool.fetchval("SELECT id FROM callbacks WHERE name = 'added'")
    assert await database.pool.fetchval("SELECT $1 = ANY(callback_ids) FROM console_sessions", added)
    status, page = await client.get(f"{base}/callbacks/cb_{added}")
    assert status == 200


async def test_a_portal_link_opens_neither_the_console_nor_the_api(app_client, portal):
    client, base, mine, sibling, theirs = portal
    token = base.rsplit("/", 1)[1]
    status, _ = await client.get("/console/callbacks", follow=False, headers={"Cookie": f"dispatcher_console={token}"})
    assert status == 303  # to sign-in
    async with client.http.get(client.base + "/v1/callbacks", headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 401


async def test_a_console_session_does_not_open_a_portal(app_client, api, portal):
    client, base, mine, sibling, theirs = portal
    console = Console(str(app_client.make_url("/")))
    try:
        await console.sign_in(api.key)
        cookie = console.http.cookie_jar.filter_cookies(URL(console.base + "/console"))["dispatcher_console"].value
        status, _ = await console.get(f"/portal/{cookie}/callbacks")
    finally:
        await console.close()
    assert status == 401


async def test_an_expired_link_opens_nothing(portal, database):
    client, base, mine, sibling, theirs = portal
    await database.pool.execute("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
    status, page = await client.get(f"{base}/callbacks")
    assert status == 401 and "expired" in page
    assert mine["callbackId"] not in page


async def test_portal_pages_may_be_framed_by_the_configured_origins_only(app_client, portal):
    client, base, mine, sibling, theirs = portal
    await client.get(f"{base}/callbacks")
    csp = client.last.headers["Content-Security-Policy"]
    assert "frame-ancestors *" in csp and "script-src 'self'" in csp
    assert "X-Frame-Options" not in client.last.headers
    assert client.last.headers["Referrer-Policy"] == "same-origin"  # the token stays on this site


async def test_the_frame_ancestors_setting_narrows_who_may_embed_the_portal(database, settings, aiohttp_client, api):
    from dispatcher.runtime import create_app

    narrowed = settings.model_copy(update={"portal_frame_ancestors": "https://app.example.com"})
    client = await aiohttp_client(create_app(narrowed, database=database))
    status, link = await api.post("/v1/portal-links", {"all": True})
    async with client.get(URL(link["url"]).path) as resp:
        assert resp.status == 200
        assert "frame-ancestors https://app.example.com;" in resp.headers["Content-Security-Policy"] + ";"
