"""The console's live view: a Server-Sent Events stream, woken by LISTEN/NOTIFY, carries each new event and
delivery outcome of the session's own account, resumes after Last-Event-ID, and ends at shutdown."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest
from yarl import URL

from dispatcher.api.console import live
from dispatcher.api.console.live import LIVE_HUB
from tests.conftest import make_key, setup_callback, wait_until
from tests.console import Console

HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "javascript:alert(1)"]


class Sse:
    """Reads an event stream message by message (id, event, data), as EventSource does."""

    def __init__(self, response: aiohttp.ClientResponse):
        self.response = response

    async def next(self, timeout: float = 15) -> dict[str, str]:
        message: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    raise EOFError("the stream ended")
                line = raw.decode().rstrip("\n")
                if not line:
                    if "data" in message:
                        return message
                    message = {}
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                message[name] = message[name] + "\n" + value if name == "data" and name in message else value

    async def next_of(self, kind: str, timeout: float = 15) -> dict[str, str]:
        while True:
            message = await self.next(timeout)
            if message.get("event") == kind:
                return message


async def open_stream(console: Console, path: str = "/console/live/stream", **headers: str) -> Sse:
    response = await console.http.get(console.base + path, headers=headers)
    return Sse(response)


async def test_a_recorded_event_arrives_on_the_open_stream(console: Console, api):
    sse = await open_stream(console)
    assert sse.response.status == 200
    assert sse.response.headers["Content-Type"] == "text/event-stream"
    assert sse.response.headers["Cache-Control"] == "no-store"
    status, _ = await api.post("/v1/events", {"type": "sent", "messageKey": "live-1", "recipient": "a@example.com"})
    assert status == 201
    message = await sse.next_of("event")
    assert "live-1" in message["data"] and "a@example.com" in message["data"]
    change = await sse.next_of("change")
    assert '"events": 1' in change["data"]
    sse.response.close()


async def test_a_reconnect_resumes_after_the_last_event_id(console: Console, api):
    sse = await open_stream(console)
    await api.post("/v1/events", {"type": "sent", "messageKey": "first"})
    first = await sse.next_of("event")
    assert "first" in first["data"]
    sse.response.close()
    for key in ("second", "third"):
        await api.post("/v1/events", {"type": "sent", "messageKey": key})
    resumed = await open_stream(console, **{"Last-Event-ID": first["id"]})
    assert "second" in (await resumed.next_of("event"))["data"]
    assert "third" in (await resumed.next_of("event"))["data"]
    resumed.response.close()


async def test_a_stream_never_carries_another_accounts_events(console: Console, api, other_api):
    sse = await open_stream(console)
    status, _ = await other_api.post("/v1/events", {"type": "sent", "messageKey": "globex-secret"})
    assert status == 201
    await api.post("/v1/events", {"type": "sent", "messageKey": "acme-marker"})
    message = await sse.next_of("event")  # the next one is our own marker: the other account's never came
    assert "acme-marker" in message["data"]
    sse.response.close()


async def test_a_delivery_outcome_arrives_with_the_callback_it_concerns(console: Console, api, receiver):
    callback_id, _ = await setup_callback(api, receiver, name="live-hook")
    sse = await open_stream(console)
    await api.post("/v1/events", {"type": "sent", "messageKey": "delivered-live"})
    outcome = await sse.next_of("outcome")
    assert "live-hook" in outcome["data"] and "succeeded" in outcome["data"] and "HTTP 200" in outcome["data"]
    change = await sse.next_of("change")
    assert callback_id in change["data"]
    sse.response.close()


async def test_a_key_without_events_read_gets_no_stream_and_no_live_page(app_client, database):
    c = Console(str(app_client.make_url("/")))
    await c.sign_in(await make_key(database, "acme", ["messages:send"]))
    status, _ = await c.get("/console/live")
    assert status == 403
    status, _ = await c.get("/console/live/stream")
    assert status == 403
    await c.close()


async def test_a_callbacks_key_streams_outcomes_but_no_events(app_client, database, api, receiver):
    await setup_callback(api, receiver, name="ops-hook")
    c = Console(str(app_client.make_url("/")))
    await c.sign_in(await make_key(database, "acme", ["callbacks:manage"]))
    sse = await open_stream(c)
    await api.post("/v1/events", {"type": "sent", "messageKey": "not-for-ops"})
    message = await sse.next()  # the event was recorded before its delivery: had it come, it would be first
    assert message["event"] == "outcome" and "ops-hook" in message["data"]
    sse.response.close()
    await c.close()


async def test_the_live_page_lists_the_latest_events_and_outcomes_escaped(console: Console, api, receiver, database):
    await setup_callback(api, receiver, name=HOSTILE[0])
    for value in HOSTILE:
        status, _ = await api.post(
            "/v1/events", {"type": "sent", "messageKey": value, "recipient": value, "data": {"x": value}}
        )
        assert status == 201

    async def outcomes_logged() -> bool:  # a receiver's answer is logged a moment after it is sent
        return await database.pool.fetchval("SELECT count(*) FROM attempts") >= len(HOSTILE)

    await wait_until(outcomes_logged)
    status, page = await console.get("/console/live")
    assert status == 200
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert 'href="javascript:' not in page
    assert 'data-live-after="e' in page
    attempt = re.search(r'href="(/console/callbacks/cb_\d+/attempts/att_\d+)"', page)
    assert attempt, page
    status, _ = await console.get(attempt[1])  # each outcome links to its request and answer
    assert status == 200


async def test_streams_end_when_the_app_shuts_down(console: Console, app_client):
    sse = await open_stream(console)
    await app_client.server.app[LIVE_HUB].close()
    with pytest.raises(EOFError):
        await sse.next(timeout=5)


async def test_a_portal_stream_carries_only_its_callbacks_outcomes_and_no_events(app_client, api, receiver, database):
    mine, _ = await setup_callback(api, receiver, name="mine")
    sibling, _ = await setup_callback(api, receiver, name="sibling")
    status, link = await api.post("/v1/portal-links", {"callbackIds": [mine]})
    assert status == 201
    base = URL(link["url"]).path.rsplit("/callbacks", 1)[0]
    portal = Console(str(app_client.make_url("/")), cookies=False)
    sse = await open_stream(portal, base + "/live/stream")
    assert sse.response.status == 200
    await api.post("/v1/events", {"type": "sent", "messageKey": "both"})
    logged = "SELECT count(*) FROM attempts WHERE callback_id = $1"
    await wait_until(lambda: _positive(database.pool.fetchval(logged, int(sibling[3:]))))
    await database.pool.execute("UPDATE callbacks SET status = 'disabled' WHERE id = $1", int(sibling[3:]))
    await api.post("/v1/events", {"type": "sent", "messageKey": "mine-only"})  # logged after the sibling's
    seen: list[dict[str, str]] = []
    while len([m for m in seen if m["event"] == "outcome"]) < 2:
        seen.append(await sse.next())
    outcomes = [m["data"] for m in seen if m["event"] == "outcome"]
    assert all(">mine<" in data for data in outcomes), outcomes  # in id order: the sibling's would be between
    assert {m["event"] for m in seen} <= {"outcome", "change"}, seen  # no events in a portal
    sse.response.close()
    await portal.close()


async def _positive(value: Any) -> bool:
    return bool(await value)


async def test_an_idle_stream_sends_heartbeats(console: Console, monkeypatch):
    monkeypatch.setattr(live, "HEARTBEAT", 0.2)
    response = await console.http.get(console.base + "/console/live/stream")
    lines: list[str] = []
    async with asyncio.timeout(10):
        while ": heartbeat\n" not in lines:
            lines.append((await response.content.readline()).decode())
    assert lines[0].startswith("retry: ")
    response.close()


async def test_a_stream_outlives_its_listener_connection(console: Console, api, database, monkeypatch):
    """The database may restart: the listener is replaced at the next heartbeat, and nothing is missed."""
    monkeypatch.setattr(live, "HEARTBEAT", 0.2)
    sse = await open_stream(console)
    listening = "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%dispatcher_live%'"
    old = await wait_until(lambda: database.pool.fetchval(listening))
    await database.pool.execute("SELECT pg_terminate_backend($1)", old)
    await api.post("/v1/events", {"type": "sent", "messageKey": "while-it-was-down"})
    message = await sse.next_of("event")
    assert "while-it-was-down" in message["data"]
    assert await wait_until(lambda: database.pool.fetchval(listening)) != old
    sse.response.close()


async def test_a_callbacks_test_event_arrives_on_the_stream_by_itself(console: Console, api, receiver):
    """Paused, the callback gets no delivery: only the test event's own NOTIFY can wake the stream."""
    callback_id, _ = await setup_callback(api, receiver, name="paused-hook")
    status, _ = await api.patch(f"/v1/callbacks/{callback_id}", {"paused": True})
    assert status == 200
    sse = await open_stream(console)
    status, _ = await api.post(f"/v1/callbacks/{callback_id}/test", {})
    assert status in (200, 201, 202)
    message = await sse.next_of("event")
    assert "test_" in message["data"]
    sse.response.close()
