"""Delivery controls across real `dispatcher serve` processes on one database: each message's events in
order, one at a time, with three processes and through a kill -9; a rate limit the processes share.
(One process, step by step: tests/integration/test_ordering.py.)"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from aiohttp import web

from tests.conftest import wait_until
from tests.e2e.procs import Client, Service, cli, register, service_env
from tests.receiver import Receiver

pytestmark = pytest.mark.timeout(180)

STEPS = ["sent", "delivered", "opened", "clicked", "unsubscribed"]
DATA = {"clicked": {"data": {"url": "https://example.com/offer"}}}


@dataclass
class OrderReceiver(Receiver):
    """A receiver that watches each message from the receiving end: every request's event type in arrival
    order, and any request that arrives while another of its message is still unanswered (`overlaps`).
    Each answer takes 0-5 ms, so overlaps would show. `refuse_first(key, type)`: answer that event's first
    request 500. While `holding` is an unset Event, requests wait for it, or for their connection to close
    (`cut_off`): a sender that dies or gives up no longer has the request in flight."""

    refuse_first: Callable[[str, str], bool] = lambda key, kind: False
    holding: asyncio.Event | None = None
    tried: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    answered: set[tuple[str, str]] = field(default_factory=set)  # (messageKey, type) answered 200
    refused: int = 0
    overlaps: list[tuple[str, str]] = field(default_factory=list)
    cut_off: list[tuple[str, str]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic()
    in_flight: Counter[str] = field(default_factory=Counter)
    peers: dict[int, str] = field(default_factory=dict)  # client port → messageKey, of requests in flight

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("webhook-id", "").startswith("verify_"):
            return await super()._handle(request)  # the ownership check: as any receiver
        body = orjson.loads(await request.read())
        key, kind = body["data"]["messageKey"], body["type"]
        first = kind not in self.tried[key]
        self.arrivals.append(time.monotonic())
        self.tried[key].append(kind)
        if self.in_flight[key]:
            self.overlaps.append((key, kind))
        self.in_flight[key] += 1
        port = request.transport.get_extra_info("peername")[1] if request.transport else 0
        self.peers[port] = key
        try:
            await asyncio.sleep(random.uniform(0, 0.005))
            if self.holding is not None and not await _held(request, self.holding):
                self.cut_off.append((key, kind))
                return web.Response(status=503)  # nobody reads it: the connection is gone
            if first and self.refuse_first(key, kind):
                self.refused += 1
                return web.Response(status=500)
            self.answered.add((key, kind))
            return web.Response(status=200)
        finally:
            self.in_flight[key] -= 1
            self.peers.pop(port, None)

    def received(self, key: str) -> list[str]:
        """The message's event types as they arrived, a request repeated right after itself counted once
        (delivery is at least once: a retry, or a request sent again after its sender died)."""
        return [kind for kind, _ in groupby(self.tried[key])]


async def _held(request: web.Request, release: asyncio.Event) -> bool:
    """Wait for `release`; False as soon as the request's connection is closed instead."""
    while not release.is_set():
        if request.transport is None or request.transport.is_closing():
            return False
        try:
            await asyncio.wait_for(release.wait(), 0.01)
        except TimeoutError:
            pass
    return True


async def _true(value: bool) -> bool:
    return value


def _env(tmp_path: Path, database_url: str, **settings: Any) -> dict[str, str]:
    """Quick retries and probes: a refused first try is soon retried, and a callback that happens to look
    failing for a moment is probed again at once instead of after half a minute."""
    settings = {"poll_interval": 0.2, "retry_schedule": ",".join(["0.2"] * 10), "retry_jitter": 0,
                "failing_probe_interval": 0.2, **settings}  # fmt: skip
    return service_env(tmp_path, database_url, **settings)


@asynccontextmanager
async def _serving(env: dict[str, str], tmp_path: Path, count: int) -> AsyncIterator[tuple[list[Service], str]]:
    """`count` separate serve processes on one database, and an API key."""
    cli(env, "accounts", "create", "default")
    key = cli(env, "keys", "create", "--account", "default").stdout.strip()
    services = [Service(env, tmp_path / f"serve{i}.log") for i in range(count)]
    try:
        for s in services:
            await s.ready()
        yield services, key
    finally:
        for s in services:
            s.stop()


async def _ordered_callback(client: Client, receiver: Receiver) -> str:
    callback_id, _ = await register(client, receiver)
    status, cb = await client.call("PATCH", f"/v1/callbacks/{callback_id}", {"ordering": "messageKey"})
    assert status == 200 and cb["ordering"] == "messageKey", cb
    return callback_id


async def _post_steps(clients: list[Client], keys: list[str]) -> None:
    """Every message's first event, then every message's second, …: one batch per step, each through
    another process, so the processes deliver one step while the next is being recorded."""
    for n, kind in enumerate(STEPS):
        batch = [{"type": kind, "messageKey": k, **DATA.get(kind, {})} for k in keys]
        status, body = await clients[n % len(clients)].call("POST", "/v1/events", {"events": batch})
        assert status == 201, body


async def _drained(database) -> None:
    """Nothing is left in the queue: nothing more will be sent."""
    await wait_until(lambda: database.pool.fetchval("SELECT count(*) = 0 FROM queue"), timeout=60)


async def test_three_serve_processes_keep_each_messages_events_in_order(tmp_path: Path, database_url: str, database):
    """1,000 messages of 5 events; the first try of every 10th message's `delivered` is refused, so
    its later events must wait for the retry while the other processes have them due."""
    receiver = await OrderReceiver(refuse_first=lambda key, kind: kind == "delivered" and key.endswith("0")).start()
    try:
        async with _serving(_env(tmp_path, database_url), tmp_path, 3) as (services, key):
            clients = [Client(s.url, key) for s in services]
            await _ordered_callback(clients[0], receiver)
            keys = [f"m{i:04}" for i in range(1000)]
            await _post_steps(clients, keys)
            await wait_until(lambda: _true(len(receiver.answered) == 5000), timeout=90, interval=0.2)
            await _drained(database)
            assert receiver.refused == 100
            assert receiver.overlaps == []
            assert {k: receiver.received(k) for k in keys if receiver.received(k) != STEPS} == {}
            assert len({s.port for s in services if '"webhook"' in s.output()}) >= 2  # the work was shared
    finally:
        await receiver.stop()


def _ports_to(service: Service, port: int) -> set[int]:
    """The service's own ends of its TCP connections to `port`."""
    conns = psutil.Process(service.proc.pid).net_connections("tcp")
    return {c.laddr.port for c in conns if c.raddr and c.raddr.port == port}


async def test_a_worker_killed_mid_delivery_keeps_each_messages_order(tmp_path: Path, database_url: str, database):
    """A process is killed while the receiver holds its requests; the others take over its messages when
    its leases end. A request the killed process sent is no longer in flight once its connection closes
    (the kernel closes it with the process), long before the lease (5 s) lets another process send that
    event again: the receiver stops counting it then, so a redelivery that overlapped a request still
    being answered would show as an overlap. The webhook timeout (1 s) keeps the living processes' own
    requests well inside their leases: an answer outlasting the lease would be redelivered in parallel,
    the at-least-once a lease implies."""
    receiver = await OrderReceiver().start()
    env = _env(tmp_path, database_url, lease_seconds=5, webhook_timeout=1)
    try:
        async with _serving(env, tmp_path, 3) as (services, key):
            doomed = services[0]
            clients = [Client(s.url, key) for s in services]
            await _ordered_callback(clients[0], receiver)
            receiver.holding = asyncio.Event()
            keys = [f"k{i:03}" for i in range(200)]
            await _post_steps(clients, keys)

            async def held_from_doomed() -> set[int]:
                return receiver.peers.keys() & await asyncio.to_thread(_ports_to, doomed, receiver.port)

            held = await wait_until(held_from_doomed, timeout=30)
            doomed.stop(signal.SIGKILL)
            # Its requests end as their connections close with it (still held: the receiver answers none).
            await wait_until(lambda: _true(not receiver.peers.keys() & held))
            assert receiver.cut_off
            receiver.holding.set()
            await wait_until(lambda: _true(len(receiver.answered) == 1000), timeout=90, interval=0.2)
            await _drained(database)
            assert receiver.overlaps == []
            assert {k: receiver.received(k) for k in keys if receiver.received(k) != STEPS} == {}
    finally:
        await receiver.stop()


async def test_three_processes_share_one_rate_limit(tmp_path: Path, database_url: str, database):
    """200 deliveries all due at once (queued while the callback was paused), 20 per second with a burst
    of 5 across three processes: no one-second window sees more than 25, and after the burst the
    receiver gets 20 a second, give or take 10 %."""
    receiver = await OrderReceiver().start()
    try:
        async with _serving(_env(tmp_path, database_url), tmp_path, 3) as (services, key):
            clients = [Client(s.url, key) for s in services]
            callback_id, _ = await register(clients[0], receiver)
            limit = {"rateLimit": {"perSecond": 20, "burst": 5}, "paused": True}
            status, cb = await clients[0].call("PATCH", f"/v1/callbacks/{callback_id}", limit)
            assert status == 200 and cb["rateLimit"] == {"perSecond": 20, "burst": 5} and cb["paused"], cb
            batch = [{"type": "sent", "messageKey": f"r{i:03}"} for i in range(200)]
            assert (await clients[1].call("POST", "/v1/events", {"events": batch}))[0] == 201
            assert (await clients[2].call("PATCH", f"/v1/callbacks/{callback_id}", {"paused": False}))[0] == 200
            await wait_until(lambda: _true(len(receiver.answered) == 200), timeout=60, interval=0.2)
            await _drained(database)
            times = sorted(receiver.arrivals)
            most = max(sum(1 for u in times if t <= u < t + 1) for t in times)
            rate = (len(times) - 5) / (times[-1] - times[0])
            assert len(times) == 200
            figures = f"{most} requests in the busiest second, {rate:.2f}/s after the burst"
            assert most <= 20 + 5, figures
            assert 18 <= rate <= 22, figures
    finally:
        await receiver.stop()
