"""Schema versions: schema.sql makes a new database, the ordered files in dispatcher/sql/migrations
upgrade an old one, and both end with the same catalog; processes starting together apply each
step once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.fernet import Fernet

from dispatcher import crypto, db
from tests.integration.test_operations import db_url, scratch_database

SCHEMA_V1 = (Path(__file__).parent.parent / "fixtures" / "schema_v1.sql").read_text()

# Column order is left out on purpose: ALTER TABLE appends, so databases of one version already differ
# in it (one made at version 3 has leased_until before attempt_ids), and no statement depends on it.
CATALOG = {
    "relations": "SELECT relname, relkind::text, reloptions, relpersistence::text FROM pg_class"
    " WHERE relnamespace = current_schema()::regnamespace ORDER BY 1",
    "columns": "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
    "   pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text"
    " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
    " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
    " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')"
    "   AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE connamespace = current_schema()::regnamespace ORDER BY 1, 2",
    "sequences": "SELECT sequencename, data_type::text, start_value, increment_by, max_value, cycle"
    " FROM pg_sequences WHERE schemaname = current_schema() ORDER BY 1",
    "partition_keys": "SELECT partrelid::regclass::text, pg_get_partkeydef(partrelid) FROM pg_partitioned_table"
    " ORDER BY 1",
    "partitions": "SELECT inhrelid::regclass::text, inhparent::regclass::text, pg_get_expr(c.relpartbound, c.oid)"
    " FROM pg_inherits JOIN pg_class c ON c.oid = inhrelid ORDER BY 1",
    "triggers": "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger"
    " WHERE NOT tgisinternal ORDER BY 1, 2",
}


async def catalog(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """What the schema is made of, as PostgreSQL reports it."""
    return {part: [tuple(r) for r in await conn.fetch(sql)] for part, sql in CATALOG.items()}


async def build_version_1(conn: asyncpg.Connection, *, first_release: bool = False) -> None:
    """A version 1 database from the frozen schema.sql of that release. `first_release`: as the first
    version 1 release left it, before its text gained deliveries_claim and schema_applied."""
    await conn.execute(SCHEMA_V1)
    if first_release:
        await conn.execute(
            "DROP TABLE schema_applied; DROP INDEX deliveries_claim;"
            " CREATE INDEX deliveries_due ON deliveries (callback_id, next_attempt_at) WHERE status = 'pending';"
            " CREATE INDEX deliveries_created ON deliveries (created_at)"
        )


async def fill_version_1(conn: asyncpg.Connection) -> dict[str, int]:
    """A little of everything, as version 1 wrote it. Attempts of the first delivery: number 2 was
    purged and number 3 logged twice (a lease lost mid-request); the second delivery made 5 attempts,
    all purged; the third made none."""
    ids: dict[str, int] = {}
    ids["account"] = acc = await conn.fetchval("INSERT INTO accounts (name) VALUES ('v1') RETURNING id")
    await conn.execute(
        "INSERT INTO api_keys (account_id, key_hash, prefix, scopes, allowed_cidrs)"
        " VALUES ($1, '\\x0102', 'dk_live_ab', '{*}', '{10.0.0.0/8}')",
        acc,
    )
    ids["callback"] = cb = await conn.fetchval(
        "INSERT INTO callbacks (account_id, name, url, status, max_batch_size) VALUES ($1, 'hook', 'http://x/', 'active', 10)"
        " RETURNING id",
        acc,
    )
    ids["pending_callback"] = await conn.fetchval(
        "INSERT INTO callbacks (account_id, name, url, verification_key_hash, verification_sent_at)"
        " VALUES ($1, 'unverified', 'http://y/', '\\x00', now()) RETURNING id",
        acc,
    )
    await conn.execute("INSERT INTO callback_secrets (callback_id, secret_enc) VALUES ($1, '\\xabcd')", cb)
    await conn.execute(
        "INSERT INTO subscriptions (account_id, callback_id, name, event_types, filters)"
        " VALUES ($1, $2, 'all', '{*}', '{\"tag\": \"x\"}')",
        acc,
        cb,
    )
    events = await conn.fetch(
        "INSERT INTO events (account_id, client_id, type, message_key, occurred_at, data)"
        " SELECT $1, 'c' || g, 'sent', 'm' || g, now(), '{\"n\": 1}' FROM generate_series(1, 3) g RETURNING id",
        acc,
    )
    for key, event, attempts, status in zip(
        ["first", "second", "third"], events, [4, 5, 0], ["succeeded", "pending", "pending"], strict=True
    ):
        ids[key] = await conn.fetchval(
            "INSERT INTO deliveries (account_id, event_id, callback_id, attempts, status)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id",
            acc, event["id"], cb, attempts, status,
        )  # fmt: skip
    for number, body in [(1, "one"), (3, "three"), (3, "three again"), (4, "four")]:
        await conn.execute(
            "INSERT INTO attempts (account_id, delivery_id, number, started_at, duration_ms, status_code, response_body)"
            " VALUES ($1, $2, $3, now(), 1.5, 500, $4)",
            acc, ids["first"], number, body,
        )  # fmt: skip
    await conn.execute(
        "INSERT INTO definitions (account_id, definition_key, name, content) VALUES ($1, 'welcome', 'Welcome', '{}')",
        acc,
    )
    await conn.execute(
        "INSERT INTO messages (account_id, message_key, definition_key, status, request, recipient)"
        " VALUES ($1, 'msg1', 'welcome', 'queued', '{\"to\": \"a@example.com\"}', 'a@example.com')",
        acc,
    )
    await conn.execute(
        "INSERT INTO suppressions (account_id, address, reason) VALUES ($1, 'b@example.com', 'bounce')", acc
    )
    return ids


async def contents(conn: asyncpg.Connection, columns: dict[str, list[str]]) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: [tuple(r) for r in await conn.fetch(f"SELECT {', '.join(cols)} FROM {table} ORDER BY 1, 2")]
        for table, cols in columns.items()
    }


async def table_columns(conn: asyncpg.Connection) -> dict[str, list[str]]:
    rows = await conn.fetch(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        " ORDER BY table_name, ordinal_position"
    )
    found: dict[str, list[str]] = {}
    for r in rows:
        found.setdefault(r["table_name"], []).append(r["column_name"])
    return found


@pytest.mark.parametrize("first_release", [False, True], ids=["version-1", "first-version-1-release"])
async def test_a_version_1_database_upgraded_through_every_migration_has_the_catalog_of_schema_sql(
    pg_server_url, database, first_release
):
    """The catalog a new database gets from schema.sql (the template behind `database`) is the one an
    old database reaches through the migration files: tables, columns with their types, nullability
    and defaults, indexes, constraints, storage options, sequences, partitions. Every value stored at
    version 1 is still there in the columns that remain."""
    async with scratch_database(pg_server_url, f"dispatcher_test_upgrade_v1_{int(first_release)}") as conn:
        await build_version_1(conn, first_release=first_release)
        await fill_version_1(conn)
        async with database.pool.acquire() as fresh:
            current = await table_columns(fresh)
        # the data: every version 1 column that is still there (schema_version is looked at below)
        kept = {
            table: [c for c in cols if c in current[table]]
            for table, cols in (await table_columns(conn)).items()
            if table not in ("schema_applied", "schema_version")
        }
        before = await contents(conn, kept)

        assert await db.migrate(conn) == db.SCHEMA_VERSION

        async with database.pool.acquire() as fresh:
            assert await catalog(conn) == await catalog(fresh)
        assert await contents(conn, kept) == before
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY 1")]
        assert versions == list(range(1, db.SCHEMA_VERSION + 1))


async def test_upgrading_from_version_1_keeps_each_deliverys_attempts_and_their_numbers(pg_server_url):
    """Version 2 logs one attempt row per request, listed by each delivery. The per-delivery rows of
    version 1 become requests of one event under the numbers they had, whatever the purge left."""
    async with scratch_database(pg_server_url, "dispatcher_test_upgrade_attempts") as conn:
        await build_version_1(conn)
        ids = await fill_version_1(conn)
        assert await db.migrate(conn) == db.SCHEMA_VERSION

        async def logged(delivery_id: int) -> list[tuple[int, str]]:
            """An attempt's number is its position in the delivery's attempt_ids."""
            found = await conn.fetch(
                "SELECT n, a.response_body FROM deliveries d, unnest(d.attempt_ids) WITH ORDINALITY u (attempt_id, n)"
                " JOIN attempts a ON a.id = u.attempt_id WHERE d.id = $1 ORDER BY n",
                delivery_id,
            )
            return [tuple(r) for r in found]

        assert await logged(ids["first"]) == [(1, "one"), (3, "three"), (4, "four")]
        assert await conn.fetchval("SELECT cardinality(attempt_ids) FROM deliveries WHERE id = $1", ids["second"]) == 5
        assert await conn.fetchval("SELECT attempt_ids FROM deliveries WHERE id = $1", ids["third"]) == []
        assert await conn.fetchval("SELECT count(*) FROM attempts WHERE events = 1 AND callback_id = $1",
                                   ids["callback"]) == 4  # fmt: skip
        # version 3: leases in their own column, none held
        assert await conn.fetchval("SELECT count(*) FROM deliveries WHERE leased_until = '-infinity'") == 3


async def test_a_callback_registered_before_version_4_shows_no_handshake_until_one_is_resent(pg_server_url):
    """Version 4 records the ownership handshake on the callback. A callback registered before shows
    no handshake (null) and has none due; a resend (start_handshake) gives it one."""
    from dispatcher import callbacks

    async with scratch_database(pg_server_url, "dispatcher_test_upgrade_handshake") as conn:
        await build_version_1(conn)
        ids = await fill_version_1(conn)
        assert await db.migrate(conn) == db.SCHEMA_VERSION

        row = await conn.fetchrow("SELECT * FROM callbacks WHERE id = $1", ids["pending_callback"])
        assert row["status"] == "pending_verification" and callbacks.callback_json(row)["verification"] is None
        assert await conn.fetch(callbacks.SQL["claim_handshakes"], 10, 60.0) == []
        keyring = crypto.Keyring(Fernet(Fernet.generate_key()), b"t" * 32)
        row, _ = await callbacks.start_handshake(conn, keyring, row["id"], ids["account"], lease=60.0)
        assert callbacks.verification_json(row) == {
            "status": "sent", "attempts": 0, "lastAttemptAt": None, "statusCode": None, "error": None,
            "nextAttemptAt": row["verification_next_at"].isoformat(),
            "resend": f"POST /v1/callbacks/cb_{row['id']}/verification",
        }  # fmt: skip


async def test_migrate_creates_the_schema_on_an_empty_database_and_then_has_nothing_to_do(pg_server_url):
    async with scratch_database(pg_server_url, "dispatcher_test_empty_migrate") as conn:
        assert await db.migrate(conn) == db.SCHEMA_VERSION
        assert await db.migrate(conn) == db.SCHEMA_VERSION
        assert await conn.fetchval("SELECT to_regclass('deliveries')") is not None
        assert [tuple(r) for r in await conn.fetch("SELECT version FROM schema_version")] == [(db.SCHEMA_VERSION,)]


async def test_a_database_newer_than_this_release_is_left_alone(database):
    """A process of the previous release starting after an upgrade (a rollback, a slow node) neither
    fails nor touches the schema."""
    async with database.pool.acquire() as conn:
        await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", db.SCHEMA_VERSION + 1)
        assert await db.migrate(conn) == db.SCHEMA_VERSION + 1


async def test_processes_starting_together_on_a_version_1_database_upgrade_it_once(pg_server_url):
    name = "dispatcher_test_upgrade_race"
    async with scratch_database(pg_server_url, name) as first:
        await build_version_1(first)
        await fill_version_1(first)
        others = [await asyncpg.connect(db_url(pg_server_url, name)) for _ in range(2)]
        try:
            versions = await asyncio.gather(*(db.migrate(c) for c in [first, *others]))
        finally:
            for c in others:
                await c.close()
        assert versions == [db.SCHEMA_VERSION] * 3
        assert await first.fetchval("SELECT count(*) FROM schema_version") == db.SCHEMA_VERSION


async def test_processes_starting_together_on_an_empty_database_apply_the_schema_once(pg_server_url):
    """Two processes start at once. The second looks for the schema while the first is applying it
    (not yet committed), then takes the migration lock just after the first commits: it must see the
    schema as there then, although its own catalog cache still remembers finding no such table."""
    name = "dispatcher_test_migrate_race"
    async with scratch_database(pg_server_url, name) as first:
        second = await asyncpg.connect(db_url(pg_server_url, name))
        try:
            tx = first.transaction()
            await tx.start()
            await first.execute("SELECT pg_advisory_xact_lock($1)", db._MIGRATION_LOCK)
            await first.execute(db.schema_sql())
            assert await db._version(second) is None  # what migrate() looks at first
            async with second.transaction():
                await tx.commit()
                await second.execute("SELECT pg_advisory_xact_lock($1)", db._MIGRATION_LOCK)
                assert await db._version(second) == db.SCHEMA_VERSION  # what migrate() looks at under the lock
            assert await db.migrate(second) == db.SCHEMA_VERSION
        finally:
            await second.close()
