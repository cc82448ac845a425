"""The webhook receiver: a separate process (so it never shares a core with the load generator),
one aiohttp app listening on one or more ports on 127.0.0.1.

POST /hook/{name}   a webhook: counted per name (requests, events; a JSON array is a batch), every
                    `verify_every`-th request of a name is verified with `standardwebhooks` when the
                    bench registered that name's secret; verification requests are kept aside.
POST /hang/{name}   a receiver that answers the ownership check and never answers an event: the
                    request is counted and held until the client gives up (isolation scenario).
GET  /_stats        counters, with the monotonic time each name's event count last changed.
GET  /_arrivals     {messageKey: monotonic arrival} when tracking is on (latency scenario).
POST /_secret       {"name", "secret"}: sign-check this name's sample from now on.
POST /_reset        zero the counters (after setup, before a measurement); {"track": bool, "order": bool}.
                    With order on, each event's data.seq must be one more than the last one of its
                    messageKey (from 0): every other arrival counts in `out_of_order` (deliver-ordered).

time.monotonic() is CLOCK_MONOTONIC, shared by all processes on the machine, so the bench can
compare arrival times with its own clock.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web


@dataclass
class _Counter:
    requests: int = 0
    events: int = 0
    connections: int = 0  # distinct TCP connections the requests came on
    first: float | None = None
    last: float | None = None


@dataclass
class _State:
    verify_every: int
    track: bool
    order: bool = False
    counters: dict[str, _Counter] = field(default_factory=dict)
    secrets: dict[str, Any] = field(default_factory=dict)
    verifications: list[dict[str, Any]] = field(default_factory=list)
    arrivals: dict[str, float] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)  # messageKey -> data.seq last arrived (order on)
    out_of_order: int = 0
    seen: set[tuple[str, int]] = field(default_factory=set)
    verified_ok: int = 0
    verified_bad: int = 0
    hanging: int = 0  # /hang requests open now
    hanging_max: int = 0
    hung: dict[str, int] = field(default_factory=dict)  # /hang requests per name


def _app(state: _State) -> web.Application:
    from standardwebhooks.webhooks import Webhook

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        name = request.match_info["name"]
        if b'"verificationKey"' in body[:300]:
            state.verifications.append({"name": name, **orjson.loads(body)})
            return web.Response(text="ok")
        c = state.counters.get(name)
        if c is None:
            c = state.counters[name] = _Counter()
        c.requests += 1
        conn = (name, id(request.transport))
        if conn not in state.seen:
            state.seen.add(conn)
            c.connections += 1
        if body[:1] == b"[":
            items = orjson.loads(body)
            n = len(items)
        else:
            items = None
            n = 1
        if state.track or state.order:
            for item in items if items is not None else [orjson.loads(body)]:
                data = item["data"]
                if state.track:
                    state.arrivals[data["messageKey"]] = now
                if state.order:
                    key, seq = data["messageKey"], data.get("seq")
                    if seq != state.last_seq.get(key, -1) + 1:
                        state.out_of_order += 1
                    state.last_seq[key] = seq
        c.events += n
        if c.first is None:
            c.first = now
        c.last = now
        if c.requests % state.verify_every == 1 and name in state.secrets:
            try:
                state.secrets[name].verify(body, dict(request.headers))
                state.verified_ok += 1
            except Exception:
                state.verified_bad += 1
        return web.Response(text="ok")

    async def hang(request: web.Request) -> web.Response:
        body = await request.read()
        name = request.match_info["name"]
        if b'"verificationKey"' in body[:300]:
            state.verifications.append({"name": name, **orjson.loads(body)})
            return web.Response(text="ok")
        state.hung[name] = state.hung.get(name, 0) + 1
        state.hanging += 1
        state.hanging_max = max(state.hanging_max, state.hanging)
        try:
            await asyncio.Event().wait()  # cancelled when the client closes the connection
        finally:
            state.hanging -= 1
        raise AssertionError("unreachable")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "counters": {k: vars(v) for k, v in state.counters.items()},
                "verifications": state.verifications,
                "verified_ok": state.verified_ok,
                "verified_bad": state.verified_bad,
                "hanging": state.hanging,
                "hanging_max": state.hanging_max,
                "hung": state.hung,
                "out_of_order": state.out_of_order,
            },
            dumps=lambda v: orjson.dumps(v).decode(),
        )

    async def arrivals(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(state.arrivals), content_type="application/json")

    async def set_secret(request: web.Request) -> web.Response:
        data = await request.json()
        state.secrets[data["name"]] = Webhook(data["secret"])
        return web.Response(text="ok")

    async def reset(request: web.Request) -> web.Response:
        data = await request.json() if request.can_read_body else {}
        state.counters.clear()
        state.seen.clear()
        state.arrivals.clear()
        state.last_seq.clear()
        state.out_of_order = 0
        state.verified_ok = state.verified_bad = 0
        state.hung.clear()
        state.hanging_max = state.hanging
        if "track" in data:
            state.track = bool(data["track"])
        if "order" in data:
            state.order = bool(data["order"])
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/hook/{name}", hook)
    app.router.add_post("/hang/{name}", hang)
    app.router.add_get("/_stats", stats)
    app.router.add_get("/_arrivals", arrivals)
    app.router.add_post("/_secret", set_secret)
    app.router.add_post("/_reset", reset)
    return app


def _serve(conn: Any, ports: int, verify_every: int) -> None:
    async def main() -> None:
        runner = web.AppRunner(
            _app(_State(verify_every, False)), access_log=None, handle_signals=False,
            handler_cancellation=True, shutdown_timeout=1.0,  # /hang handlers end when their client leaves
        )  # fmt: skip
        await runner.setup()
        bound = []
        for _ in range(ports):
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
            await site.start()
            bound.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        conn.send(bound)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_reader(conn.fileno(), stop.set)  # parent closed the pipe or asked
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


class Receiver:
    """Handle on the receiver process. `url(name, i)` is the hook `name` on port number i."""

    def __init__(self, ports: int = 1, verify_every: int = 100):
        self.n_ports, self.verify_every = ports, verify_every
        self.ports: list[int] = []
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> Receiver:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._pipe = parent
        self._proc = ctx.Process(target=_serve, args=(child, self.n_ports, self.verify_every), daemon=True)
        self._proc.start()
        self.ports = await asyncio.to_thread(parent.recv)
        self._session = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._proc is not None:
            self._pipe.send("stop")
            await asyncio.to_thread(self._proc.join, 5)
            if self._proc.is_alive():
                self._proc.kill()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def url(self, name: str, i: int = 0, *, path: str = "hook") -> str:
        return f"http://127.0.0.1:{self.ports[i % len(self.ports)]}/{path}/{name}"

    @property
    def _base(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"

    async def stats(self) -> dict[str, Any]:
        assert self._session is not None
        async with self._session.get(self._base + "/_stats") as r:
            return await r.json()

    async def arrivals(self) -> dict[str, float]:
        assert self._session is not None
        async with self._session.get(self._base + "/_arrivals") as r:
            return orjson.loads(await r.read())

    async def set_secret(self, name: str, secret: str) -> None:
        assert self._session is not None
        async with self._session.post(self._base + "/_secret", json={"name": name, "secret": secret}) as r:
            r.raise_for_status()

    async def reset(self, *, track: bool = False, order: bool = False) -> None:
        assert self._session is not None
        async with self._session.post(self._base + "/_reset", json={"track": track, "order": order}) as r:
            r.raise_for_status()

    async def verification_key(self, name: str, timeout: float = 15.0) -> str:
        async with asyncio.timeout(timeout):
            while True:
                for v in (await self.stats())["verifications"]:
                    if v["name"] == name:
                        return str(v["verificationKey"])
                await asyncio.sleep(0.02)

    async def wait_events(
        self, names: list[str], total: int, *, timeout: float, interval: float = 0.02
    ) -> tuple[dict[str, Any], float]:
        """Wait until the named hooks received `total` events; returns (stats, last arrival time)."""
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.stats()
            got = [stats["counters"].get(n) for n in names]
            count = sum(c["events"] for c in got if c)
            if count >= total:
                return stats, max(c["last"] for c in got if c)
            if time.monotonic() > deadline:
                raise TimeoutError(f"receiver got {count} of {total} events within {timeout:.0f}s")
            await asyncio.sleep(interval)

    @staticmethod
    def count(stats: dict[str, Any], names: list[str], what: str = "events") -> int:
        return sum(stats["counters"].get(n, {}).get(what, 0) for n in names)
