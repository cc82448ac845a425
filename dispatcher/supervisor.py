"""`serve --processes N`: one listening socket, N `serve` child processes sharing it.

A Python process uses one core; this is how one host uses several. The parent prepares what must
happen once (the embedded PostgreSQL, the schema, the generated keys, the first API key), binds the
port, and starts N children that inherit the socket, so the kernel spreads connections over them.
Workers in different processes already coordinate through the database (leases, SKIP LOCKED).

The parent only supervises: SIGTERM or SIGINT is passed on to every child, which drains as a single
`serve` would. Children run in their own process group (a terminal's Ctrl-C reaches the parent only),
ignore a second signal while they drain (an init system may signal every process), and stop by
themselves if the parent disappears. A child that exits on its own stops the others and the parent
exits with status 1, so the init system or orchestrator restarts the whole service: no half-running
state.

An embedded PostgreSQL belongs to the parent: if its postmaster dies, the parent starts it again
(crash recovery) and the children's pools reconnect to it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any

import asyncpg
from aiohttp import web

from dispatcher import accounts, crypto, db
from dispatcher.logs import get_logger
from dispatcher.settings import Settings

log = get_logger(__name__)
PARENT_ENV = "DISPATCHER_SUPERVISOR_PID"  # set for children: the process whose exit stops them


def as_child(app: web.Application, listen_fd: int) -> socket.socket:
    """Set up a child's app; returns the inherited listening socket."""
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())

    async def ignore_further_signals(_app: web.Application) -> None:
        # Draining has begun; a second SIGTERM (systemd signals every process of the unit) would make
        # aiohttp abandon the drain halfway, before leases are handed back.
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
            signal.signal(signum, signal.SIG_IGN)

    async def stop_when_orphaned(_app: web.Application) -> AsyncIterator[None]:
        # A supervisor that was killed cannot stop us, and its embedded database went with it.
        async def watch() -> None:
            while os.getppid() == parent:  # noqa: ASYNC110 - nothing announces a parent's death
                await asyncio.sleep(1.0)
            log.error("the supervising process is gone; stopping")
            os.kill(os.getpid(), signal.SIGTERM)

        task = asyncio.create_task(watch())
        yield
        task.cancel()

    app.on_shutdown.append(ignore_further_signals)
    app.cleanup_ctx.append(stop_when_orphaned)
    return socket.socket(fileno=listen_fd)


def process_count(settings: Settings) -> int:
    if settings.processes:
        return settings.processes
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use, not the host's
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _listen(host: str, port: int) -> socket.socket:
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return socket.create_server(address[:2], family=family, backlog=1024)


async def _prepare(settings: Settings, url: str) -> str | None:
    """Schema and first key, once, before any child starts; returns a newly created key."""
    conn = await asyncpg.connect(url)
    try:
        await db.migrate(conn)
        return await accounts.bootstrap(conn) if settings.bootstrap else None
    finally:
        await conn.close()


def _revive(server: Any) -> None:
    """The children reach the embedded server by URL; its holder, this process, restarts it if it died."""
    try:
        if db.revive_embedded(server):
            log.error("the embedded postgres had stopped; started it again (crash recovery)")
    except Exception as exc:  # e.g. the dead server's backends still hold its shared memory: next tick
        log.warning("embedded postgres did not start yet; retrying", error=str(exc) or type(exc).__name__)


def run(settings: Settings, *, role: str, first_key: Callable[[str, Settings], None]) -> int:
    """Run `process_count(settings)` children; returns the exit status for the parent."""
    url, server = db.resolve_url(settings)  # an embedded server stops when this process exits
    crypto.load_keyring(settings)  # generates the master key file once, not racing in N children
    key = asyncio.run(_prepare(settings, url))
    if key:
        first_key(key, settings)
    listener = _listen(settings.host, settings.port)
    env = {
        **os.environ,
        "DISPATCHER_DATABASE_URL": url,
        "DISPATCHER_BOOTSTRAP": "false",
        "DISPATCHER_PROCESSES": "1",
        PARENT_ENV: str(os.getpid()),
    }
    command = [sys.executable, "-m", "dispatcher", "serve", "--role", role, "--listen-fd", str(listener.fileno())]
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    children = [
        subprocess.Popen(command, env=env, pass_fds=[listener.fileno()], process_group=0)
        for _ in range(process_count(settings))
    ]
    listener.close()  # the children hold it now
    print(f"dispatcher: serving on http://{settings.host}:{settings.port} with {len(children)} processes",
          file=sys.stderr, flush=True)  # fmt: skip
    status = 0
    try:
        while not stopping:
            died = [c for c in children if c.poll() is not None]
            if died:
                log.error("a serve process exited; stopping the others", pid=died[0].pid, status=died[0].returncode)
                status = 1
                break
            if server is not None:
                _revive(server)
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 2 * settings.shutdown_grace + 5
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("a serve process did not stop in time; killing it", pid=child.pid)
                child.kill()
                child.wait()
            if child.returncode not in (0, -signal.SIGTERM):
                status = 1
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status
