"""The real `dispatcher` command in real processes: CLI, first start, restarts, several workers, crashes."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import asyncpg
import psutil
import pytest

from tests.conftest import wait_until
from tests.e2e.procs import Client, Service, cli, first_key, register, service_env
from tests.receiver import Receiver

pytestmark = pytest.mark.timeout(180)


def test_cli_manages_accounts_and_keys(tmp_path: Path, database_url: str):
    env = service_env(tmp_path, database_url)
    assert cli(env, "migrate").returncode == 0
    created = cli(env, "accounts", "create", "shop")
    assert created.returncode == 0 and "shop" in created.stdout
    assert cli(env, "accounts", "create", "shop").returncode == 1  # duplicate names are refused
    made = cli(env, "keys", "create", "--account", "shop", "--scope", "events:read", "--allow-ip", "10.0.0.0/8")
    assert made.returncode == 0
    assert made.stdout.strip().startswith("dk_") and len(made.stdout.strip().splitlines()) == 1
    listed = cli(env, "keys", "list", "--account", "shop")
    assert "events:read" in listed.stdout and "10.0.0.0/8" in listed.stdout and made.stdout.strip() not in listed.stdout
    key_id = listed.stdout.splitlines()[1].split()[0]  # under the header
    assert cli(env, "keys", "revoke", key_id).returncode == 0
    assert "revoked" in cli(env, "keys", "list", "--account", "shop").stdout
    assert "shop" in cli(env, "accounts", "list").stdout
    assert "serve" in cli(env, "--help").stdout and "keys" in cli(env, "--help").stdout


async def test_first_start_prints_a_key_once_and_data_survives_a_restart_on_the_embedded_database(tmp_path: Path):
    env = service_env(tmp_path / "data")
    service = await Service(env, tmp_path / "first.log").ready(60)
    try:
        key = first_key(service.output())
        assert "curl" in service.output()
        client = Client(service.url, key)
        status, _ = await client.call("POST", "/v1/events", {"type": "sent", "messageKey": "persist-me"})
        assert status == 201
    finally:
        assert service.stop() == 0
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()

    again = await Service(env, tmp_path / "second.log").ready(60)
    try:
        assert "dk_" not in again.output()  # never printed again
        status, body = await Client(again.url, key).call("GET", "/v1/messages/persist-me")
        assert status == 200 and body["events"][0]["type"] == "sent"
        made = cli(env, "keys", "create", "--account", "default")  # the CLI joins the running embedded server
        assert made.returncode == 0, made.stderr
        assert (await Client(again.url, made.stdout.strip()).call("GET", "/v1/events"))[0] == 200
    finally:
        again.stop()


async def test_three_serve_processes_on_one_database_deliver_each_event_exactly_once(
    tmp_path: Path, database_url: str, receiver: Receiver
):
    env = service_env(tmp_path, database_url, poll_interval=0.2)
    assert cli(env, "migrate").returncode == 0
    cli(env, "accounts", "create", "default")
    key = cli(env, "keys", "create", "--account", "default").stdout.strip()
    services = [Service(env, tmp_path / f"serve{i}.log") for i in range(3)]
    try:
        for s in services:
            await s.ready()
        clients = [Client(s.url, key) for s in services]
        _, secret = await register(clients[0], receiver)
        for i in range(30):
            batch = [{"type": "sent", "messageKey": f"m{i}-{j}"} for j in range(10)]
            assert (await clients[i % 3].call("POST", "/v1/events", {"events": batch}))[0] == 201
        await receiver.wait_for(300, timeout=60)
        # Every delivery finished after exactly one request: a second send of any of them would need
        # a second attempt, and nothing is left pending that could be sent again.
        conn = await asyncpg.connect(database_url)
        try:
            outcomes = "SELECT status, attempts, count(*) AS n FROM deliveries GROUP BY 1, 2"
            await wait_until(lambda: conn.fetchval("SELECT count(*) = 0 FROM queue"))
            done = await conn.fetch(outcomes)
        finally:
            await conn.close()
        assert [(r["status"], r["attempts"], r["n"]) for r in done] == [("succeeded", 1, 300)]
        ids = [r.headers["webhook-id"] for r in receiver.events]
        assert len(ids) == 300 and len(set(ids)) == 300
        for r in receiver.events[:20]:
            r.verify(secret)
        served_by = {s.port for s in services if '"webhook"' in s.output()}
        assert len(served_by) >= 2  # the work really was shared
    finally:
        for s in services:
            s.stop()


async def test_a_worker_killed_mid_delivery_loses_nothing(tmp_path: Path, database_url: str):
    slow = await Receiver(mode="slow", slow_seconds=3).start()
    try:
        env = service_env(tmp_path, database_url, lease_seconds=2, poll_interval=0.2)
        cli(env, "accounts", "create", "default")
        key = cli(env, "keys", "create", "--account", "default").stdout.strip()
        doomed = await Service(env, tmp_path / "doomed.log").ready()
        client = Client(doomed.url, key)
        await register(client, slow)
        batch = [{"type": "sent", "messageKey": f"k{i}"} for i in range(20)]
        assert (await client.call("POST", "/v1/events", {"events": batch}))[0] == 201
        await slow.wait_for(5)  # requests are in flight now
        doomed.stop(signal.SIGKILL)
        slow.mode = "ok"
        survivor = await Service(env, tmp_path / "survivor.log").ready()
        try:

            async def all_arrived():
                return {r.json["data"]["messageKey"] for r in slow.events} >= {f"k{i}" for i in range(20)}

            await wait_until(all_arrived, timeout=60)
            status, body = await Client(survivor.url, key).call("GET", "/v1/events?limit=1000")
            assert status == 200
            cb = (await Client(survivor.url, key).call("GET", "/v1/callbacks"))[1]["callbacks"][0]["callbackId"]

            async def none_pending():
                _, d = await Client(survivor.url, key).call("GET", f"/v1/callbacks/{cb}/deliveries?status=pending")
                return not d["deliveries"]

            await wait_until(none_pending, timeout=60)
        finally:
            survivor.stop()
    finally:
        await slow.stop()


async def test_sigterm_hands_back_in_flight_deliveries_instead_of_waiting_out_their_lease(
    tmp_path: Path, database_url: str, database
):
    """Stop claiming, give in-flight requests the grace period, then release the rest at once."""
    slow = await Receiver(mode="slow", slow_seconds=30).start()
    try:
        service = await _five_in_flight(tmp_path, database_url, slow)
        assert service.stop(signal.SIGTERM) == 0  # the pytest timeout bounds how long this may take
        await _assert_all_handed_back(database, 5)
    finally:
        await slow.stop()


async def _five_in_flight(tmp_path: Path, database_url: str, slow: Receiver, *serve_args: str) -> Service:
    """A service (short grace, long lease) with five deliveries in flight to `slow`: one for each of five
    callbacks, since a callback that has not answered yet gets one request at a time."""
    env = service_env(tmp_path, database_url, shutdown_grace=1, lease_seconds=300, poll_interval=0.2)
    cli(env, "accounts", "create", "default")
    key = cli(env, "keys", "create", "--account", "default").stdout.strip()
    service = await Service(env, tmp_path / "serve.log", *serve_args).ready()
    client = Client(service.url, key)
    for i in range(5):
        await register(client, slow, name=f"hook{i}")
    assert (await client.call("POST", "/v1/events", {"type": "sent", "messageKey": "k"}))[0] == 201
    await slow.wait_for(5)  # all five requests are in flight, each would take 30 s
    return service


async def _assert_all_handed_back(database, n: int) -> None:
    rows = await database.pool.fetch(
        "SELECT 'pending' AS status, lease_owner, next_attempt_at <= now() AS due FROM queue"
    )
    assert len(rows) == n
    assert all(r["status"] == "pending" and r["lease_owner"] is None and r["due"] for r in rows)


def _children(service: Service) -> list[psutil.Process]:
    return psutil.Process(service.proc.pid).children()


async def test_serve_with_two_processes_prints_one_key_and_both_processes_take_connections(
    tmp_path: Path, database_url: str, receiver: Receiver
):
    env = service_env(tmp_path, database_url, bootstrap="true")
    service = await Service(env, tmp_path / "serve.log", "--processes", "2").ready()
    try:
        children = _children(service)
        assert len(children) == 2 and all("--listen-fd" in " ".join(c.cmdline()) for c in children)
        client = Client(service.url, first_key(service.output()))  # exactly one key, printed by the parent
        await register(client, receiver)
        batch = [{"type": "sent", "messageKey": f"m{i}"} for i in range(50)]
        assert (await client.call("POST", "/v1/events", {"events": batch}))[0] == 201
        await receiver.wait_for(50, timeout=60)

        # The kernel hands connections on the shared socket to both processes.
        sessions = []
        try:
            for _ in range(100):
                session = aiohttp.ClientSession()
                sessions.append(session)
                async with session.get(service.url + "/healthz") as resp:
                    assert resp.status == 200
                serving = {c.pid for c in children
                           for conn in c.net_connections("tcp") if conn.laddr.port == service.port and conn.raddr}  # fmt: skip
                if len(serving) == 2:
                    break
            assert len(serving) == 2
        finally:
            for session in sessions:
                await session.close()
    finally:
        assert service.stop() == 0
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


async def test_a_serve_process_that_dies_stops_the_others_and_the_parent_exits_1(tmp_path: Path, database_url: str):
    env = service_env(tmp_path, database_url)
    service = await Service(env, tmp_path / "serve.log", "--processes", "2").ready()
    children = _children(service)
    children[0].kill()
    await asyncio.to_thread(service.proc.wait, 60)
    assert service.stop() == 1
    assert "a serve process exited" in service.output()
    assert not children[1].is_running() or children[1].status() == psutil.STATUS_ZOMBIE


async def test_serve_processes_stop_by_themselves_when_their_parent_is_killed(tmp_path: Path, database_url: str):
    env = service_env(tmp_path, database_url)
    service = await Service(env, tmp_path / "serve.log", "--processes", "2").ready()
    children = _children(service)
    service.stop(signal.SIGKILL)  # nothing is left to pass a SIGTERM on

    def gone(p: psutil.Process) -> bool:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE

    await wait_until(lambda: _all_true(gone(c) for c in children), timeout=30)


async def _all_true(values) -> bool:
    return all(values)


async def test_a_second_sigterm_does_not_cut_a_serve_process_drain_short(tmp_path: Path, database_url: str, database):
    """systemd signals every process of a unit: the children get SIGTERM from it and from the parent."""
    slow = await Receiver(mode="slow", slow_seconds=30).start()
    try:
        service = await _five_in_flight(tmp_path, database_url, slow, "--processes", "2")
        for child in _children(service):
            child.send_signal(signal.SIGTERM)
        assert service.stop(signal.SIGTERM) == 0
        await _assert_all_handed_back(database, 5)
    finally:
        await slow.stop()
