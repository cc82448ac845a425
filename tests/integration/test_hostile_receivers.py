"""Receivers that misbehave on purpose, on real sockets on 127.0.0.1: one that never answers, one that answers
a byte at a time, one that answers 10 MB. Each passes the ownership check like a well-behaved receiver and turns
hostile for events. The worker must time them out, record what happened, keep only an excerpt of what they
said, stay within its per-callback concurrency (fewer requests for a callback that times out, more again once
it answers), and keep healthy callbacks at their own pace."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

from dispatcher.runtime import create_app
from tests.conftest import Api, make_key, setup_callback, wait_until
from tests.receiver import Received, Receiver, stop_accepting

EXCERPT = 4096
HUGE = 10 * 1024 * 1024


@dataclass
class Arrival:
    webhook_id: str
    at: float  # loop time
    body: bytes
    in_flight: int = 0  # requests open at this receiver once this one arrived, itself included
    path: str = ""


@dataclass
class HostileReceiver:
    """An HTTP/1.1 server on a raw asyncio socket. It answers the ownership check (webhook-id verify_*) with
    200; for events it behaves per `mode`: `silent` reads the request and never writes a byte, `drip_body`
    sends a 200 header then one body byte every `drip` seconds, `drip_head` sends even the status line one byte
    at a time, `slow` answers 200 after `drip` seconds (a receiver that is slow but keeps up). A test may
    switch the mode mid-flight."""

    mode: str
    drip: float = 0.2
    arrivals: list[Arrival] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    _keys: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> HostileReceiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Drop every connection, then let the handlers see it and end. (Cancelling them mid-drip left
        their transports closing after the test's loop had ended: an intermittent ResourceWarning.)"""
        assert self._server is not None
        await stop_accepting(self._server)
        self._server.close()
        async with asyncio.timeout(5):
            while True:
                await asyncio.sleep(0.01)  # a connection accepted just before the close starts its handler
                if not self._handlers:
                    break
                for writer in list(self._writers):
                    writer.transport.abort()
                await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def verification_key(self) -> str:
        async with asyncio.timeout(15):
            return await self._keys.get()

    @property
    def event_ids(self) -> set[str]:
        return {a.webhook_id for a in self.arrivals}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                webhook_id = headers.get("webhook-id", "")
                if webhook_id.startswith("verify_"):
                    self._keys.put_nowait(orjson.loads(body)["verificationKey"])
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
                    continue
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                path = head.split(b" ", 2)[1].decode()
                now = asyncio.get_running_loop().time()
                self.arrivals.append(Arrival(webhook_id, now, body, self.in_flight, path))
                try:
                    await self._misbehave(reader, writer)
                finally:
                    self.in_flight -= 1
                return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass  # the client gave up and closed the connection: that is the point
        finally:
            writer.close()
            self._writers.discard(writer)
            self._handlers.discard(task)

    async def _misbehave(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "silent":
            await reader.read()  # returns at EOF, when the client gives up
            return
        if self.mode == "slow":
            await asyncio.sleep(self.drip)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            return
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n"
        if self.mode == "drip_body":
            writer.write(head)
            head = b""
        for byte in head + b"x" * 100_000:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(self.drip)


class HugeReceiver(Receiver):
    """Passes the ownership check, then answers every event with 200 and a 10 MB body (sized or chunked)."""

    chunked: bool = False
    answered: int = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("webhook-id", "").startswith("verify_"):
            return await super()._handle(request)
        body = await request.read()
        self.requests.append(Received(dict(request.headers), body, time.time()))
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        if not self.chunked:
            resp.content_length = HUGE
        await resp.prepare(request)
        chunk = b"0123456789abcdef" * 4096
        self.answered += 1
        with contextlib.suppress(ConnectionError, OSError):
            for _ in range(HUGE // len(chunk)):
                await resp.write(chunk)
            await resp.write_eof()
        return resp


@pytest.fixture
async def hostile() -> AsyncIterator[Any]:
    started: list[Any] = []

    async def start(server: Any) -> Any:
        started.append(server)
        return await server.start()

    yield start
    for server in reversed(started):
        await server.stop()


async def hostile_api(database: Any, settings: Any, aiohttp_client: Any, **overrides: Any) -> Api:
    # failing_after is raised so the failing-callback probe mode (one request at a time) stays out of the way
    s = settings.model_copy(update={"webhook_timeout": 1.0, "failing_after": 10_000, **overrides})
    client = await aiohttp_client(create_app(s, database=database))
    return Api(client, await make_key(database, "acme"))


async def subscribe(api: Api, server: Any, name: str, event_type: str = "sent", url: str | None = None) -> str:
    """Register, verify (the hostile servers answer the ownership check) and subscribe to `event_type`."""
    status, cb = await api.post("/v1/callbacks", {"name": name, "url": url or server.url})
    assert status == 201, cb
    if isinstance(server, Receiver):
        [req] = await server.wait_for(1, events_only=False)
        key = req.json["verificationKey"]
    else:
        key = await server.verification_key()
    status, body = await api.post(f"/v1/callbacks/{cb['callbackId']}/verify", {"verificationKey": key})
    assert status == 200 and body["status"] == "active", body
    status, sub = await api.post(
        "/v1/subscriptions", {"name": f"{name}-sub", "callbackId": cb["callbackId"], "eventTypes": [event_type]}
    )
    assert status == 201, sub
    return cb["callbackId"]


async def post_events(api: Api, n: int, prefix: str = "m", event_type: str = "sent") -> list[str]:
    status, body = await api.post("/v1/events", {"events": [{"type": event_type, "messageKey": f"{prefix}-{i}"}
                                                            for i in range(n)]})  # fmt: skip
    assert status == 201 and body["created"] == n, body
    return [e["eventId"] for e in body["events"]]


async def deliveries(api: Api, callback_id: str) -> list[dict[str, Any]]:
    status, body = await api.get(f"/v1/callbacks/{callback_id}/deliveries?limit=1000")
    assert status == 200, body
    return body["deliveries"]


async def first_attempt(api: Api, callback_id: str) -> dict[str, Any]:
    async def attempted() -> Any:
        rows = await deliveries(api, callback_id)
        return rows if rows and rows[0]["attemptCount"] >= 1 else None

    [row] = await wait_until(attempted, timeout=20)
    status, detail = await api.get(f"/v1/deliveries/{row['deliveryId']}")
    assert status == 200, detail
    return {**detail, "attempt": detail["attempts"][0]}


# --- one misbehaving receiver at a time ---------------------------------------------------------


async def test_receiver_that_accepts_and_never_answers_is_recorded_as_a_timeout(
    database, settings, aiohttp_client, hostile
):
    server = await hostile(HostileReceiver("silent"))
    api = await hostile_api(database, settings, aiohttp_client)
    callback_id = await subscribe(api, server, "silent")
    await post_events(api, 1)
    delivery = await first_attempt(api, callback_id)
    assert delivery["attempt"]["errorKind"] == "timeout"
    assert delivery["attempt"]["statusCode"] is None
    assert delivery["lastError"] == "timeout" and delivery["status"] == "pending"
    assert len(server.arrivals) >= 1 and server.arrivals[0].webhook_id.startswith("dlv_")


@pytest.mark.parametrize("mode", ["drip_body", "drip_head"])
async def test_receiver_that_answers_a_byte_at_a_time_is_recorded_as_a_timeout(
    database, settings, aiohttp_client, hostile, mode
):
    server = await hostile(HostileReceiver(mode))
    api = await hostile_api(database, settings, aiohttp_client)
    callback_id = await subscribe(api, server, mode.replace("_", "-"))
    await post_events(api, 1)
    delivery = await first_attempt(api, callback_id)
    assert delivery["attempt"]["errorKind"] == "timeout"
    assert delivery["status"] in ("pending", "failed")


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
async def test_ten_megabyte_answer_succeeds_and_only_an_excerpt_is_stored(
    database, settings, aiohttp_client, hostile, chunked
):
    server = HugeReceiver()
    server.chunked = chunked
    await hostile(server)
    api = await hostile_api(database, settings, aiohttp_client)
    callback_id = await subscribe(api, server, "huge")
    await post_events(api, 1)
    delivery = await first_attempt(api, callback_id)
    assert delivery["status"] == "succeeded"
    assert delivery["attempt"]["statusCode"] == 200 and delivery["attempt"]["errorKind"] is None
    excerpt = delivery["attempt"]["responseBody"]
    assert 0 < len(excerpt) <= EXCERPT
    assert excerpt == ("0123456789abcdef" * 4096)[: len(excerpt)]
    stored = await database.pool.fetchval("SELECT max(octet_length(response_body)) FROM attempts")
    assert stored <= EXCERPT


# --- isolation and limits -----------------------------------------------------------------------


async def test_healthy_callback_gets_every_event_while_others_hang_drip_and_flood(
    database, settings, aiohttp_client, hostile
):
    n = 30
    silent = await hostile(HostileReceiver("silent"))
    drip = await hostile(HostileReceiver("drip_body"))
    huge = await hostile(HugeReceiver())
    healthy = await hostile(Receiver())
    # The receivers share this test's event loop with the service: on a loaded machine a 1 s timeout would
    # cut healthy answers too (then retried, at least once), so the hanging ones get 5 s to waste instead.
    api = await hostile_api(database, settings, aiohttp_client, webhook_timeout=5.0)
    await subscribe(api, silent, "silent")
    await subscribe(api, drip, "drip")
    huge_id = await subscribe(api, huge, "huge")
    healthy_id, _ = await setup_callback(api, healthy, event_types=["sent"], name="healthy")
    event_ids = await post_events(api, n)

    got = await healthy.wait_for(n, timeout=30)
    assert sorted(r.json["data"]["eventId"] for r in got) == sorted(event_ids)  # each once, none lost
    # When the healthy one was done, the hanging ones had not even seen every event once.
    assert len(silent.event_ids) < n and len(drip.event_ids) < n

    async def recorded() -> bool:
        rows = await deliveries(api, healthy_id)
        return len(rows) == n and {(r["status"], r["attemptCount"]) for r in rows} == {("succeeded", 1)}

    await wait_until(recorded)

    async def flood_done() -> bool:
        rows = await deliveries(api, huge_id)
        return len(rows) == n and all(r["status"] == "succeeded" for r in rows)

    await wait_until(flood_done, timeout=30)


async def test_in_flight_requests_per_callback_never_exceed_callback_concurrency(
    database, settings, aiohttp_client, hostile
):
    """A receiver that keeps up earns more requests in flight with each answer, up to callback_concurrency."""
    concurrency, n = 3, 20
    slow = await hostile(HostileReceiver("slow", drip=0.2))
    api = await hostile_api(database, settings, aiohttp_client, callback_concurrency=concurrency)
    await subscribe(api, slow, "slow")
    await post_events(api, n)

    async def every_event_answered() -> bool:
        return len(slow.event_ids) >= n and slow.in_flight == 0

    await wait_until(every_event_answered, timeout=60)
    assert slow.max_in_flight <= concurrency
    assert slow.max_in_flight == concurrency  # the limit was reached, so the bound above means something


async def test_a_callback_that_times_out_gets_one_request_at_a_time_and_more_again_once_it_answers(
    database, settings, aiohttp_client, hostile
):
    """Each timeout halves a callback's requests in flight (never below one); each answer adds one back."""
    concurrency = 4
    server = await hostile(HostileReceiver("slow", drip=0.2))
    api = await hostile_api(database, settings, aiohttp_client, callback_concurrency=concurrency, webhook_timeout=0.5)
    await subscribe(api, server, "flaky")
    await post_events(api, 20, prefix="a")

    async def reached(k: int) -> bool:
        return server.max_in_flight == k

    await wait_until(lambda: reached(concurrency), timeout=30)
    server.mode = "silent"  # four requests in flight now, or soon: they all time out
    await post_events(api, 20, prefix="b")
    start = len(server.arrivals)

    async def arrived(k: int) -> bool:
        return len(server.arrivals) >= start + k

    await wait_until(lambda: arrived(concurrency + 3), timeout=30)
    after_timeouts = server.arrivals[start + concurrency : start + concurrency + 3]
    assert [a.in_flight for a in after_timeouts] == [1, 1, 1]

    server.mode, server.max_in_flight = "slow", 0
    await post_events(api, 30, prefix="c")
    await wait_until(lambda: reached(concurrency), timeout=30)


async def test_many_hanging_callbacks_with_backlogs_leave_a_healthy_callback_its_deliveries(
    database, settings, aiohttp_client, hostile
):
    """Fifteen callbacks whose receivers hang, each with a backlog of 40, under the default limits (200
    requests per worker, 10 per callback). Their requests hang longer than this test waits, so the healthy
    callback's events arriving at all shows they did not wait behind the hanging ones."""
    hanging = 15
    silent = await hostile(HostileReceiver("silent"))
    api = await hostile_api(database, settings, aiohttp_client, webhook_timeout=60.0)
    for i in range(hanging):
        await subscribe(api, silent, f"silent-{i}", event_type="opened")
    await post_events(api, 40, prefix="backlog", event_type="opened")

    async def every_one_hangs() -> bool:
        return silent.in_flight >= hanging

    await wait_until(every_one_hangs, timeout=15)
    healthy = await hostile(Receiver())
    await setup_callback(api, healthy, event_types=["sent"], name="healthy")
    event_ids = await post_events(api, 10, prefix="h")
    got = await healthy.wait_for(10, timeout=20)
    assert sorted(r.json["data"]["eventId"] for r in got) == sorted(event_ids)
    assert silent.in_flight >= hanging  # still hanging: nothing timed out meanwhile


async def test_callbacks_take_turns_at_the_workers_request_slots(database, settings, aiohttp_client, hostile):
    """The worker's requests in flight go round the busy callbacks in turn: one callback with a deep
    queue cannot take every slot (and there are never more than worker_concurrency)."""
    slots = 4
    server = await hostile(HostileReceiver("slow", drip=0.05))
    api = await hostile_api(database, settings, aiohttp_client, worker_concurrency=slots, callback_concurrency=slots)
    for i in range(3):
        await subscribe(api, server, f"slow-{i}", url=f"{server.url}/{i}")
    await post_events(api, 30, prefix="warm")  # each callback earns its 4 requests in flight

    async def answered(n: int) -> bool:
        return len(server.event_ids) >= n and server.in_flight == 0

    await wait_until(lambda: answered(90), timeout=30)
    server.drip = 0.5  # within the webhook timeout (1 s): no request is cut off
    start = len(server.arrivals)
    await post_events(api, 12)
    await wait_until(lambda: answered(90 + 36), timeout=60)
    first_round = server.arrivals[start : start + slots]
    assert sorted({a.path for a in first_round}) == [f"/hook/{i}" for i in range(3)]
    assert server.max_in_flight == slots


async def test_callbacks_holding_their_share_on_hanging_receivers_leave_free_slots_to_others(
    database, settings, aiohttp_client, hostile
):
    """Two hanging callbacks hold their whole share, one in flight each: half the worker's request slots
    are idle, so a healthy callback still gets claimed and delivered long before the hanging requests time
    out."""
    silent = [await hostile(HostileReceiver("silent")) for _ in range(2)]
    api = await hostile_api(
        database, settings, aiohttp_client, worker_concurrency=4, callback_concurrency=1, webhook_timeout=30.0
    )
    for i, server in enumerate(silent):
        await subscribe(api, server, f"silent-{i}")
    await post_events(api, 10)

    async def hanging() -> bool:
        return [s.in_flight for s in silent] == [1, 1]

    await wait_until(hanging, timeout=10)
    healthy = await hostile(Receiver())
    await setup_callback(api, healthy, event_types=["sent"], name="healthy")
    await post_events(api, 3, prefix="h")
    got = await healthy.wait_for(3, timeout=10)
    assert sorted(r.json["data"]["messageKey"] for r in got) == ["h-0", "h-1", "h-2"]
    assert [s.in_flight for s in silent] == [1, 1]  # still hanging: the healthy one did not wait for them


async def test_a_worker_leases_no_more_of_a_slow_callback_than_its_share(database, settings, aiohttp_client, hostile):
    """The share is 4 rounds of the callback's requests in flight; refills top it up, they do not add a
    full share. Read from the leases in the database, where a finished request keeps its lease until the
    next flush of outcomes (up to 20 ms later): a claim in between shows one share plus what has just
    finished, one round at most."""
    concurrency, n = 2, 60
    slow = await hostile(HostileReceiver("slow", drip=0.3))
    api = await hostile_api(database, settings, aiohttp_client, callback_concurrency=concurrency)
    await subscribe(api, slow, "slow")
    await post_events(api, n)
    leased = "SELECT count(*) FROM queue WHERE leased_until > now()"
    most = 0
    while len(slow.event_ids) < n:
        most = max(most, await database.pool.fetchval(leased))
        await asyncio.sleep(0.005)
    assert 4 * concurrency <= most <= 5 * concurrency


async def test_a_410_sends_back_what_waits_behind_it_instead_of_following_up(database, settings, aiohttp_client):
    failing = await Receiver(mode="ok").start()
    try:
        api = await hostile_api(database, settings, aiohttp_client, callback_concurrency=1)
        await subscribe(api, failing, "failing")
        failing.mode = "gone"
        await post_events(api, 4)  # one in flight, three waiting behind it

        async def handed_back() -> bool:
            return await database.pool.fetchval(
                "SELECT count(*) FROM queue WHERE attempts = 0 AND lease_owner IS NULL "
                "AND next_attempt_at > created_at + interval '1 second'"
            ) == 3  # fmt: skip

        await wait_until(handed_back, timeout=15)
        assert len({e.json["data"]["messageKey"] for e in failing.events}) == 1  # only the first was sent
    finally:
        await failing.stop()
