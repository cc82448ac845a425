"""The background loop every worker shares: run a step, then wait for a NOTIFY, a wake-up, the step's
pause, or stop — whichever comes first. A failed step never ends the loop: the database may be
restarting, so it drops its connections and tries again after a back-off.

    while not stopping: listen → step → pause (0: go again at once)
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from dispatcher.db import Database
from dispatcher.logs import get_logger

log = get_logger("dispatcher.loop")


def worker_id() -> str:
    """Who holds a lease: the host, the process, and which worker in it."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def backoff(failures: int) -> float:
    return min(0.2 * 2**failures, 5.0)


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait for the event or the timeout (asyncio.timeout: cancellation is never swallowed)."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass


class BackgroundLoop:
    """Runs `step` until stopped. `step` returns how long to wait before the next one. With a
    `channel`, a NOTIFY on it ends the wait early (and sets `notified`); `wake()` does too.
    After a failure the loop waits `on_failure(consecutive failures)` seconds."""

    def __init__(
        self, name: str, database: Database, step: Callable[[], Awaitable[float]], *, channel: str | None = None,
        on_failure: Callable[[int], float] = backoff,
    ):  # fmt: skip
        self.name, self.db, self.step, self.channel, self.on_failure = name, database, step, channel, on_failure
        self.stopping = False
        self.notified = False  # a NOTIFY arrived since the last pause began
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    def wake(self) -> None:
        self._wake.set()

    async def stop(self, grace: float | None = None) -> bool:
        """Stop after the current step; with `grace`, cancel a step still running then. True: it finished."""
        self.stopping = True
        self._wake.set()
        finished = True
        if self._task:
            try:
                async with asyncio.timeout(grace):
                    await asyncio.shield(self._task)
            except TimeoutError:
                finished = False
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        self._drop_listener()
        return finished

    def _on_notify(self, *_: Any) -> None:
        self.notified = True
        self._wake.set()

    async def _listen(self) -> None:
        if self.channel is not None and (self._listener is None or self._listener.is_closed()):
            self._listener = await asyncpg.connect(self.db.url, timeout=5)
            await self._listener.add_listener(self.channel, self._on_notify)

    def _drop_listener(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            self._listener.terminate()
        self._listener = None

    async def _run(self) -> None:
        failures = 0
        while not self.stopping:
            try:
                await self._listen()
                pause = await self.step()
                failures = 0
            except Exception as exc:  # the loop must outlive any failure; the database may be restarting
                failures += 1
                log.warning(f"{self.name} failed; retrying", error=str(exc) or type(exc).__name__, attempt=failures)
                self._drop_listener()
                await self.db.discard_connections()
                pause = self.on_failure(failures)
            if pause > 0:
                await self._pause(pause)

    async def _pause(self, timeout: float) -> None:
        self.notified = False
        await wait_event(self._wake, timeout)
        self._wake.clear()
