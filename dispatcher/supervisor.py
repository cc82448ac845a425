"""`serve --processes N`: one listening socket, N `serve` child processes sharing it.

A Python process uses one core; this is how one host uses several. The parent prepares what must
happen once (the embedded PostgreSQL, the schema, the generated keys, the first API key), binds the
port, and starts N children that inherit the socket, so the kernel spreads connections over them.
Workers in different processes already coordinate through the database (leases, SKIP LOCKED).

The parent only supervises: SIGTERM or SIGINT is passed on to every child, which drains as a single
`serve` would. A child that exits on its own stops the others and the parent exits with status 1,
so the init system or orchestrator restarts the whole service: no half-running state.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType

import asyncpg

from dispatcher import accounts, crypto, db
from dispatcher.logs import get_logger
from dispatcher.settings import Settings

log = get_logger(__name__)


def process_count(settings: Settings) -> int:
    return settings.processes or os.cpu_count() or 1


async def _prepare(settings: Settings, url: str) -> str | None:
    """Schema and first key, once, before any child starts; returns a newly created key."""
    conn = await asyncpg.connect(url)
    try:
        await db.migrate(conn)
        return await accounts.bootstrap(conn) if settings.bootstrap else None
    finally:
        await conn.close()


def run(settings: Settings, *, role: str, first_key: Callable[[str, Settings], None]) -> int:
    """Run `process_count(settings)` children; returns the exit status for the parent."""
    url, _server = db.resolve_url(settings)  # an embedded server stops when this process exits
    crypto.load_keyring(settings)  # generates the master key file once, not racing in N children
    key = asyncio.run(_prepare(settings, url))
    if key:
        first_key(key, settings)
    listener = socket.create_server((settings.host, settings.port), backlog=1024)
    env = {
        **os.environ,
        "DISPATCHER_DATABASE_URL": url,
        "DISPATCHER_BOOTSTRAP": "false",
        "DISPATCHER_PROCESSES": "1",
    }
    command = [sys.executable, "-m", "dispatcher", "serve", "--role", role, "--listen-fd", str(listener.fileno())]
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    children = [
        subprocess.Popen(command, env=env, pass_fds=[listener.fileno()]) for _ in range(process_count(settings))
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
                child.kill()
                child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status
