"""A real webhook receiver on 127.0.0.1 whose behaviour a test switches mid-flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook


async def stop_accepting(server: asyncio.Server) -> None:
    """Stop taking connections, and let the ones already accepted get their transports, before the server
    is closed. (Python 3.11's Server.close() races its own accept loop: a connection accepted just before
    the close fails to attach to the closed server and its socket is dropped unclosed, a ResourceWarning
    whenever a client, such as the delivery worker retrying, connects while a test's receiver stops.)"""
    loop = asyncio.get_running_loop()
    for sock in server.sockets:
        loop.remove_reader(sock.fileno())
    for _ in range(2):
        await asyncio.sleep(0)  # the accepted connections' first step creates and attaches their transports


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)

    def verify(self, secret: str) -> Any:
        """Verify exactly as a receiver would, with the public standardwebhooks package."""
        return Webhook(secret).verify(self.body, self.headers)


@dataclass
class Receiver:
    mode: str = "ok"  # ok | fail | gone | rate | slow | close | redirect
    retry_after: str = "1"
    slow_seconds: float = 5.0
    fail_text: str = "receiver exploded"  # the body of a `fail` answer
    hold: asyncio.Event | None = None  # when set to an Event: every answer waits until it is set
    hold_when: Callable[[Received], bool] | None = None  # … or only the answers to requests it picks
    answer: Callable[[Received], int | None] | None = None  # a status for this request (None: as `mode` says)
    requests: list[Received] = field(default_factory=list)
    runner: web.AppRunner | None = None
    _site: web.TCPSite | None = None
    port: int = 0
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        # Slow handlers are cut off at stop: a test's receiver never holds up the next test.
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        self._site = web.TCPSite(self.runner, "127.0.0.1", self.port)  # 0: any free port
        await self._site.start()
        self.port = self._site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self.runner:
            if self._site is not None and isinstance(self._site._server, asyncio.Server):
                await stop_accepting(self._site._server)
            await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        received = Received(dict(request.headers), body, time.time())
        async with self._arrived:
            self.requests.append(received)
            self._arrived.notify_all()
        if self.hold is not None and (self.hold_when is None or self.hold_when(received)):
            await self.hold.wait()
        if self.answer is not None and (status := self.answer(received)) is not None:
            return web.Response(status=status)
        mode = self.mode
        if mode == "fail":
            return web.Response(status=500, text=self.fail_text)
        if mode == "gone":
            return web.Response(status=410)
        if mode == "rate":
            return web.Response(status=429, headers={"Retry-After": self.retry_after})
        if mode == "redirect":
            return web.Response(status=302, headers={"Location": "http://127.0.0.1:1/elsewhere"})
        if mode == "slow":
            await asyncio.sleep(self.slow_seconds)
        if mode == "close":
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=200)
        return web.Response(status=200, text="ok")

    @property
    def events(self) -> list[Received]:
        """Requests other than the ownership check."""
        return [r for r in self.requests if not r.headers.get("webhook-id", "").startswith("verify_")]

    async def wait_for(self, count: int, *, timeout: float = 15, events_only: bool = True) -> list[Received]:
        def enough() -> bool:
            return len(self.events if events_only else self.requests) >= count

        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(enough)
        return self.events if events_only else self.requests
