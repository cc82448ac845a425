"""Schema versions: schema.sql makes a new database, the ordered files in dispatcher/sql/migrations
upgrade an old one, and both end with the same catalog; processes starting together apply each
step once."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.fernet import Fernet

from dispatcher import crypto, db, events
from tests.integration.test_operations import db_url, scratch_database

SCHEMA_V1 = (Path(__file__).parent.parent / "fixtures" / "schema_v1.sql").read_text()
DB_SQL = db.queries("db")

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
    "functions": "SELECT proname, pg_get_functiondef(oid) FROM pg_proc"
    " WHERE pronamespace = current_schema()::regnamespace AND prokind IN ('f', 'p') ORDER BY 1, 2",
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


# A delivery as every version shows it; from version 9 on, pending ones are in `queue`, finished ones
# in `deliveries`, each dated by its event's recorded_at (which partitions it with its event).
DELIVERIES = (
    "SELECT d.id, d.account_id, d.event_id, d.callback_id, d.status, d.attempts FROM deliveries d ORDER BY d.id"
)
DELIVERIES_V9 = (
    "SELECT d.id, d.account_id, d.event_id, d.callback_id, d.status, d.attempts, e.recorded_at = d.created_at"
    " FROM (SELECT id, account_id, event_id, callback_id, 'pending' AS status, attempts, created_at FROM queue"
    "       UNION ALL"
    "       SELECT id, account_id, event_id, callback_id, status, attempts, created_at FROM deliveries) d"
    " LEFT JOIN events e ON e.id = d.event_id ORDER BY d.id"
)


@pytest.mark.parametrize("first_release", [False, True], ids=["version-1", "first-version-1-release"])
async def test_a_version_1_database_upgraded_through_every_migration_has_the_catalog_of_schema_sql(
    pg_server_url, database, first_release
):
    """The catalog a new database gets from schema.sql (the template behind `database`) is the one an
    old database reaches through the migration files: tables, columns with their types, nullability
    and defaults, indexes, constraints, storage options, sequences, partitions, functions. Every value
    stored at version 1 is still there in the columns that remain; its deliveries are in the queue or
    in the history as their status says. Both databases have today's partitions and the days ahead
    only (the old data was recorded today), so the catalogs compare whole."""
    name = f"dispatcher_test_upgrade_v1_{int(first_release)}"
    async with scratch_database(pg_server_url, name) as conn:
        await build_version_1(conn, first_release=first_release)
        ids = await fill_version_1(conn)
        async with database.pool.acquire() as fresh:
            current = await table_columns(fresh)
        # the data: every version 1 column that is still there (schema_version is looked at below)
        kept = {
            table: [c for c in cols if c in current[table]]
            for table, cols in (await table_columns(conn)).items()
            if table not in ("schema_applied", "schema_version", "deliveries")
        }
        before = await contents(conn, kept)
        deliveries = [(*r, True) for r in await conn.fetch(DELIVERIES)]
        last = {t: await conn.fetchval(f"SELECT max(id) FROM {t}") for t in ("events", "deliveries", "attempts")}
        client_event = await conn.fetchval("SELECT id FROM events WHERE client_id = 'c1'")

        assert await db.migrate(conn) == db.SCHEMA_VERSION

        async with database.pool.acquire() as fresh:
            assert await catalog(conn) == await catalog(fresh)
        assert await contents(conn, kept) == before
        assert [tuple(r) for r in await conn.fetch(DELIVERIES_V9)] == deliveries
        assert await conn.fetchval("SELECT count(*) FROM queue") == 2
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY 1")]
        assert versions == list(range(1, db.SCHEMA_VERSION + 1))
        await assert_ids_continue_and_client_ids_still_deduplicate(
            db_url(pg_server_url, name), ids["account"], "c1", client_event, last
        )


async def assert_ids_continue_and_client_ids_still_deduplicate(
    url: str, account: int, client_id: str, event_id: int, last: dict[str, int]
) -> None:
    """Re-posting an event whose client id was stored before the upgrade records nothing; a new event
    gets an id after the old ones, and so do its delivery and the next attempt."""
    pool = await db.create_pool(url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            counts = "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM queue)"
            before = tuple(await conn.fetchrow(counts))
            [stored], new = await events.record_events(
                conn, account, [events.NewEvent("sent", "again", {"tag": "x"}, client_id=client_id)]
            )
            assert (new, stored["id"]) == (0, event_id)  # the answer is the stored event
            assert tuple(await conn.fetchrow(counts)) == before
            [fresh], new = await events.record_events(conn, account, [events.NewEvent("sent", "new", {"tag": "x"})])
            assert new == 1 and fresh["id"] > last["events"]
            delivery = await conn.fetchval("SELECT id FROM queue WHERE event_id = $1", fresh["id"])
            assert delivery is not None and delivery > last["deliveries"]
            assert await conn.fetchval("SELECT nextval(pg_get_serial_sequence('attempts', 'id'))") > last["attempts"]
    finally:
        await pool.close()


async def build_version_8(conn: asyncpg.Connection) -> None:
    """A version 8 database: version 1's schema, then the migration files up to 8 as they ran."""
    await build_version_1(conn)
    for version, (_, text) in db.migrations().items():
        if version <= 8:
            async with conn.transaction():
                await conn.execute(text)
                await conn.execute(DB_SQL["record_migration"], version)


PAST_DAYS = (6, 3, 1)  # days before today that a version 8 database holds history of
HISTORY_TIMES = {"events": "recorded_at", "deliveries": "created_at", "attempts": "started_at",
                 "source_receipts": "received_at"}  # fmt: skip


async def fill_version_8_over_days(conn: asyncpg.Connection, days: list[date]) -> dict[str, int]:
    """Per day, at noon (UTC), two events from a source with their receipts, each delivered once and
    logged (the delivery dated a little after its event, as a separate transaction would); the first
    day's second event also has a delivery still pending, for a second callback."""
    account = await conn.fetchval("INSERT INTO accounts (name) VALUES ('v8') RETURNING id")
    hook, slow = [await conn.fetchval(
        "INSERT INTO callbacks (account_id, name, url, status) VALUES ($1, $2, 'http://x/', 'active') RETURNING id",
        account, name) for name in ("hook", "slow")]  # fmt: skip
    await conn.execute(
        "INSERT INTO subscriptions (account_id, callback_id, name, event_types) VALUES ($1, $2, 'all', '{*}')",
        account, hook,
    )  # fmt: skip
    source = await conn.fetchval(
        "INSERT INTO sources (account_id, name, provider) VALUES ($1, 'ses', 'ses') RETURNING id", account
    )
    for day in days:
        for k in range(2):
            at = datetime.combine(day, time(12, k), UTC)
            event = await conn.fetchval(
                "INSERT INTO events (account_id, client_id, type, message_key, occurred_at, recorded_at)"
                " VALUES ($1, $2, 'delivered', $2, $3, $3) RETURNING id",
                account, f"c-{day:%Y%m%d}-{k}", at,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO source_receipts (event_id, account_id, source_id, received_at, raw)"
                " VALUES ($1, $2, $3, $4, $5)",
                event, account, source, at, f'{{"n": {event}}}',
            )  # fmt: skip
            attempt = await conn.fetchval(
                "INSERT INTO attempts (account_id, callback_id, webhook_id, events, started_at, duration_ms, status_code)"
                " VALUES ($1, $2, 'msg_' || $3::bigint, 1, $4, 2.5, 200) RETURNING id",
                account, hook, event, at + timedelta(seconds=2),
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO deliveries (account_id, event_id, callback_id, status, attempts, created_at, attempt_ids)"
                " VALUES ($1, $2, $3, 'succeeded', 1, $4, ARRAY[$5::bigint])",
                account, event, hook, at + timedelta(seconds=1), attempt,
            )  # fmt: skip
    await conn.execute(
        "INSERT INTO deliveries (account_id, event_id, callback_id, created_at)"
        " SELECT account_id, id, $1, recorded_at + interval '1 second' FROM events WHERE client_id = $2",
        slow, f"c-{days[0]:%Y%m%d}-1",
    )  # fmt: skip
    return {"account": account}


def of_day(rows: list[tuple[Any, ...]], day: date) -> list[str]:
    """The catalog rows of one day's partitions, with the day (and the next, in bounds) named alike."""
    marks = [(f"{d:%Y%m%d}", f"{d:%Y-%m-%d}") for d in (day, day + timedelta(days=1))]
    found = []
    for row in rows:
        text = repr(row)
        if f"_{marks[0][0]}" in text:
            for (compact, iso), name in zip(marks, ("DAY", "NEXT"), strict=True):
                text = text.replace(compact, name).replace(iso, name)
            found.append(text)
    return sorted(found)


async def test_a_version_8_database_with_history_over_several_days_has_each_days_rows_in_that_days_partition(
    pg_server_url, database
):
    """Migration 0009 makes a partition for every day the old data holds and copies each row into it:
    events, finished deliveries (dated by their event), the attempt log and source receipts; the
    pending delivery goes to the queue. The old days' partitions are made like today's, and the rest
    of the catalog is a new database's. Client ids of those days still deduplicate."""
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=n) for n in PAST_DAYS]
    name = "dispatcher_test_upgrade_v8_days"
    async with scratch_database(pg_server_url, name) as conn:
        await build_version_8(conn)
        ids = await fill_version_8_over_days(conn, days)
        counts = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in HISTORY_TIMES}
        receipts = [
            tuple(r) for r in await conn.fetch("SELECT event_id, source_id, raw FROM source_receipts ORDER BY 1")
        ]
        last = {t: await conn.fetchval(f"SELECT max(id) FROM {t}") for t in ("events", "deliveries", "attempts")}
        client_event = await conn.fetchval("SELECT id FROM events WHERE client_id = $1", f"c-{days[1]:%Y%m%d}-0")

        assert await db.migrate(conn) == db.SCHEMA_VERSION

        for table, column in HISTORY_TIMES.items():
            rows = await conn.fetch(f"SELECT tableoid::regclass::text AS partition, {column} AS at FROM {table}")
            assert [r["partition"] for r in rows] == [f"{table}_{r['at'].astimezone(UTC):%Y%m%d}" for r in rows]
            assert {r["at"].astimezone(UTC).date() for r in rows} == set(days), table
            assert len(rows) == counts[table] - (table == "deliveries"), table  # the pending one is queued
        [queued] = await conn.fetch("SELECT q.created_at = e.recorded_at AS dated FROM queue q JOIN events e"
                                    " ON e.id = q.event_id")  # fmt: skip
        assert queued["dated"]
        assert [
            tuple(r) for r in await conn.fetch("SELECT event_id, source_id, raw FROM source_receipts ORDER BY 1")
        ] == receipts
        assert await conn.fetchval(
            "SELECT bool_and(e.recorded_at = d.created_at AND a.started_at = e.recorded_at + interval '2 seconds')"
            " FROM deliveries d JOIN events e ON e.id = d.event_id JOIN attempts a ON a.id = ANY(d.attempt_ids)"
        )

        # The migrated database also has the old days' partitions, which a new one never had: they
        # are compared with today's instead, and the rest with the new database's catalog.
        migrated = await catalog(conn)
        for part, rows in migrated.items():
            for day in days:
                assert of_day(rows, day) == of_day(rows, today), (part, day)
        old = tuple(f"_{d:%Y%m%d}" for d in days)
        async with database.pool.acquire() as fresh:
            assert {part: [r for r in rows if not any(mark in repr(r) for mark in old)]
                    for part, rows in migrated.items()} == await catalog(fresh)  # fmt: skip

        await assert_ids_continue_and_client_ids_still_deduplicate(
            db_url(pg_server_url, name), ids["account"], f"c-{days[1]:%Y%m%d}-0", client_event, last
        )


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
        # the pending ones are in the queue (version 9), with their attempt logs
        assert await conn.fetchval("SELECT cardinality(attempt_ids) FROM queue WHERE id = $1", ids["second"]) == 5
        assert await conn.fetchval("SELECT attempt_ids FROM queue WHERE id = $1", ids["third"]) == []
        assert await conn.fetchval("SELECT count(*) FROM attempts WHERE events = 1 AND callback_id = $1",
                                   ids["callback"]) == 4  # fmt: skip
        # version 3: leases in their own column, none held
        assert await conn.fetchval("SELECT count(*) FROM queue WHERE leased_until = '-infinity'") == 2


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
            await first.execute("SELECT pg_advisory_xact_lock($1)", db.MIGRATION_LOCK)
            await first.execute(db.schema_sql())
            assert not await second.fetchval(DB_SQL["schema_table_exists"])  # what migrate() looks at first
            async with second.transaction():
                await tx.commit()
                await second.execute("SELECT pg_advisory_xact_lock($1)", db.MIGRATION_LOCK)
                # what migrate() looks at under the lock
                assert await second.fetchval(DB_SQL["schema_table_exists"])
                assert await second.fetchval(DB_SQL["applied_version"]) == db.SCHEMA_VERSION
            assert await db.migrate(second) == db.SCHEMA_VERSION
        finally:
            await second.close()
