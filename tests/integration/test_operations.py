"""Operations: metrics, retention, roles."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from dispatcher import db
from dispatcher.api.keys import SERVICES
from dispatcher.retention import Purger
from dispatcher.runtime import create_app
from tests.conftest import Api, make_key, setup_callback, wait_until
from tests.integration.test_smtp_transport import free_port
from tests.receiver import Receiver

METRICS_TOKEN = "s3cret-metrics-token"


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"metrics_token": METRICS_TOKEN})


async def test_metrics_expose_requests_events_deliveries_and_queue_state(api: Api, receiver: Receiver):
    await setup_callback(api, receiver)
    await api.post(
        "/v1/events", {"events": [{"type": "sent", "messageKey": "m1"}, {"type": "opened", "messageKey": "m1"}]}
    )
    await receiver.wait_for(2)
    resp = await api.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert resp.status == 200 and resp.content_type.startswith("text/plain")
    text = await resp.text()
    assert 'dispatcher_events_ingested_total{type="sent"} 1.0' in text
    assert 'dispatcher_http_requests_total{method="POST",route="/v1/events",status="201"} 1.0' in text
    assert "dispatcher_webhook_attempt_seconds_bucket" in text
    assert 'dispatcher_callbacks{status="active"} 1.0' in text
    assert "dispatcher_deliveries_pending" in text and "dispatcher_oldest_due_delivery_seconds" in text


async def test_metrics_answer_only_the_configured_token(database, settings, aiohttp_client):
    client = await aiohttp_client(create_app(settings, database=database))
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})).status == 200


async def test_metrics_are_off_by_default_so_no_one_reads_cross_account_counts_unauthenticated(
    database, settings, aiohttp_client
):
    """The counts span every account: without DISPATCHER_METRICS_TOKEN nobody gets them, not even
    with an account's API key."""
    client = await aiohttp_client(create_app(settings.model_copy(update={"metrics_token": None}), database=database))
    key = await make_key(database, "acme")
    for headers in ({}, {"Authorization": f"Bearer {key}"}):
        resp = await client.get("/metrics", headers=headers)
        body = await resp.text()
        assert resp.status == 404 and "dispatcher_" not in body, (resp.status, body[:300])
        assert "DISPATCHER_METRICS_TOKEN" in (await resp.json())["error"]["message"]


async def test_retention_drops_whole_days_of_history_but_keeps_a_day_while_an_event_of_it_is_being_delivered(
    api: Api, database, settings, receiver: Receiver
):
    from dispatcher import partitions

    callback_id, _ = await setup_callback(api, receiver)
    await api.post("/v1/events", {"events": [{"type": "sent", "messageKey": f"old{i}"} for i in range(25)]})
    await receiver.wait_for(25)

    async def all_recorded():
        return await database.pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'succeeded'") == 25

    await wait_until(all_recorded)
    await api.patch(f"/v1/callbacks/{callback_id}", {"status": "disabled"})
    await api.post("/v1/events", {"type": "sent", "messageKey": "old-but-pending"})
    async with database.pool.acquire() as conn:  # everything so far happened three days ago
        await partitions.ensure(conn, start=partitions.today() - timedelta(days=3), days=1)
        await conn.execute("UPDATE events SET recorded_at = recorded_at - interval '3 days'")
        await conn.execute("UPDATE deliveries SET created_at = created_at - interval '3 days'")
        await conn.execute("UPDATE queue SET created_at = created_at - interval '3 days'")
        await conn.execute("UPDATE attempts SET started_at = started_at - interval '3 days'")
    await api.post("/v1/events", {"type": "sent", "messageKey": "recent"})
    purger = Purger(database, settings.model_copy(update={"retention_days": 1}))

    assert (await purger.purge())["partitions"] == 1  # the attempt log's day; events wait for old-but-pending
    assert await database.pool.fetchval("SELECT count(*) FROM events") == 27
    assert await database.pool.fetchval("SELECT count(*) FROM attempts") == 0
    assert await database.pool.fetchval("SELECT count(*) FROM deliveries") == 25

    await api.patch(f"/v1/callbacks/{callback_id}", {"status": "active"})
    await receiver.wait_for(27)
    await wait_until(lambda: database.pool.fetchval("SELECT count(*) = 0 FROM queue"))
    assert (await purger.purge())["partitions"] == 3  # events, deliveries, source_receipts of that day
    keys = {r["message_key"] for r in await database.pool.fetch("SELECT message_key FROM events")}
    assert keys == {"recent"}
    assert await database.pool.fetchval("SELECT count(*) FROM deliveries") == 1
    assert (await purger.purge())["partitions"] == 0


async def test_no_day_is_dropped_while_a_transaction_requeueing_old_deliveries_holds_the_days(database):
    """Retry and recover move a finished delivery of an old day back into the queue: the purge's check
    that a day has nothing queued, and its drop, must not run between them."""
    from dispatcher import partitions

    old = partitions.today() - timedelta(days=10)
    async with database.pool.acquire() as holder, database.pool.acquire() as purger:
        await partitions.ensure(holder, start=old, days=1)
        cutoff = datetime.now(UTC) - timedelta(days=5)
        async with holder.transaction():
            await partitions.hold(holder)
            assert await partitions.drop_expired(purger, before=cutoff) is None
            assert partitions.Partition("events", old) in await partitions.existing(purger)
        dropped = await partitions.drop_expired(purger, before=cutoff)
    assert dropped is not None and f"events_{old:%Y%m%d}" in dropped


@pytest.mark.parametrize(
    ("role", "services"),
    [
        ("api", []),
        ("worker", ["DeliveryWorker", "MailSender", "Purger", "HandshakeRetrier"]),
        ("inbound", ["BounceListener"]),
        ("all", ["DeliveryWorker", "MailSender", "Purger", "HandshakeRetrier", "BounceListener"]),
    ],
)
async def test_roles_split_the_api_from_the_workers_and_the_bounce_listener(
    database, settings, aiohttp_client, role, services
):
    settings = settings.model_copy(
        update={"bounce_address": "bounces@mail.example.com", "inbound_smtp": f"127.0.0.1:{free_port()}"}
    )
    app = create_app(settings, database=database, role=role)
    client = await aiohttp_client(app)
    key = await make_key(database, "acme")
    status = (await client.get("/v1/events", headers={"Authorization": f"Bearer {key}"})).status
    assert status == (200 if role in ("api", "all") else 404)
    assert (await client.get("/readyz")).status == 200
    running = [type(s).__name__ for s in app[SERVICES]["running"]]
    assert running == services


async def test_without_an_inbound_address_all_runs_no_bounce_listener(database, settings, aiohttp_client):
    app = create_app(settings, database=database)
    await aiohttp_client(app)
    assert "BounceListener" not in [type(s).__name__ for s in app[SERVICES]["running"]]


async def test_starting_another_process_on_a_current_schema_takes_no_table_locks(database):
    """A process starting next to busy ones must not re-run the DDL: its CREATE INDEX would wait on
    (and could deadlock with) every writer."""
    async with database.pool.acquire() as busy, database.pool.acquire() as starting:
        async with busy.transaction():
            await busy.execute("LOCK TABLE deliveries, events, messages IN ROW EXCLUSIVE MODE")  # as writers hold
            assert await asyncio.wait_for(db.migrate(starting), timeout=10) == db.SCHEMA_VERSION


@contextlib.asynccontextmanager
async def scratch_database(server_url: str, name: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a new, empty database on the test server, dropped afterwards."""
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
        conn = await asyncpg.connect(db_url(server_url, name))
        try:
            yield conn
        finally:
            await conn.close()
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


def db_url(server_url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(server_url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


async def due_deliveries(conn: asyncpg.Connection, n: int, *, callbacks: int = 1, account: str = "due") -> None:
    """n deliveries due for each of `callbacks` active callbacks of a new account, written directly."""
    account_id = await conn.fetchval("INSERT INTO accounts (name) VALUES ($1) RETURNING id", account)
    for i in range(callbacks):
        cb = await conn.fetchval(
            "INSERT INTO callbacks (account_id, name, url, status) VALUES ($1, $2, 'http://x/', 'active') RETURNING id",
            account_id,
            f"cb{i}",
        )
        await conn.execute(
            "WITH e AS (INSERT INTO events (account_id, type, message_key, occurred_at)"
            "           SELECT $1, 'sent', 'm' || g, now() FROM generate_series(1, $3::int) g RETURNING id)"
            " INSERT INTO queue (account_id, event_id, callback_id, created_at, next_attempt_at)"
            " SELECT $1, id, $2, now(), now() - interval '1 hour' FROM e",
            account_id,
            cb,
            n,
        )


async def test_a_claim_leases_deliveries_in_place_and_an_expired_lease_makes_them_due_again(database):
    """The lease is its own column: a claimed delivery keeps its due time and its place in the claim
    index (the claim is a heap-only update, writing no index entries), nobody else claims it while the
    lease runs, and once the lease runs out (a crashed worker) the next claim takes it."""
    from dispatcher.delivery.queue import claim

    def claim_as(conn: Any, worker: str) -> Any:
        return claim(conn, worker, held={}, share=40, limit=10, lease=300.0, linger=0.2, room=400)

    async with database.pool.acquire() as conn:
        await due_deliveries(conn, 3, account="lease-in-place")
        async with conn.transaction():
            claimed = await claim_as(conn, "w1")
            hot = await conn.fetchval("SELECT pg_stat_get_xact_tuples_hot_updated('queue'::regclass)")
        rows = await conn.fetch(
            "SELECT lease_owner, leased_until > now() + interval '4 minutes' AS leased,"
            " next_attempt_at < now() - interval '59 minutes' AS due_time_kept FROM queue WHERE id = ANY($1)",
            [r["id"] for r in claimed],
        )
        again = await claim_as(conn, "w2")
        await conn.execute("UPDATE queue SET leased_until = now() - interval '1 second' WHERE id = $1",
                           claimed[0]["id"])  # fmt: skip
        expired = await claim_as(conn, "w2")
    assert len(claimed) == 3 and hot == 3
    assert [dict(r) for r in rows] == [{"lease_owner": "w1", "leased": True, "due_time_kept": True}] * 3
    assert again == []
    assert [r["id"] for r in expired] == [claimed[0]["id"]]


async def test_an_attempt_made_after_the_lease_was_lost_is_logged_but_leaves_the_delivery_to_its_new_owner(
    database,
):
    """Another worker took over a delivery whose lease ran out mid-request: the request still happened,
    so it is in that delivery's attempt log, but the delivery's state is the new owner's to decide."""
    from dispatcher.delivery import queue

    async with database.pool.acquire() as conn:
        await due_deliveries(conn, 2, account="lost-lease")
        kept, lost = await queue.claim(conn, "w1", held={}, share=40, limit=10, lease=300.0, linger=0.2, room=400)
        await conn.execute("UPDATE queue SET lease_owner = 'w2' WHERE id = $1", lost["id"])
        now = datetime.now(UTC)
        await queue.complete(
            conn, worker="w1",
            requests=[queue.Request(kept["account_id"], kept["callback_id"], "batch_x", 2, now, 3.0, 200, None, "ok")],
            results=[queue.Result(kept["id"], 1, "succeeded", 1, 0.0), queue.Result(lost["id"], 1, "succeeded", 1, 0.0)],
        )  # fmt: skip
        rows = await conn.fetch(
            "SELECT id, status, attempts, NULL AS lease_owner, attempt_ids FROM deliveries WHERE id = ANY($1)"
            " UNION ALL SELECT id, 'pending', attempts, lease_owner, attempt_ids FROM queue WHERE id = ANY($1)",
            [kept["id"], lost["id"]],
        )
        [attempt] = await conn.fetch("SELECT id, events, webhook_id, status_code FROM attempts")
    by_id = {r["id"]: r for r in rows}
    assert dict(by_id[kept["id"]]) | {"id": 0} == {
        "id": 0, "status": "succeeded", "attempts": 1, "lease_owner": None, "attempt_ids": [attempt["id"]]
    }  # fmt: skip
    assert dict(by_id[lost["id"]]) | {"id": 0} == {
        "id": 0, "status": "pending", "attempts": 0, "lease_owner": "w2", "attempt_ids": [attempt["id"]]
    }  # fmt: skip
    assert (attempt["events"], attempt["webhook_id"], attempt["status_code"]) == (2, "batch_x", 200)


async def test_claiming_from_a_large_due_backlog_walks_the_index_instead_of_sorting_or_scanning_it(database):
    """A claim costs what it takes, not what is queued: with 20,000 due deliveries for one (batching)
    callback, statistics saying every row is due, the plan reads them in claim order from the index,
    stops at the limit, and updates the rows it locked by their physical address (not by hashing the
    table to join them); its probes for due work never scan the table either, and each row's event is
    read from its own day's partition by index."""
    from dispatcher.delivery.queue import SQL

    async with database.pool.acquire() as conn:
        await due_deliveries(conn, 20000)
        await conn.execute("UPDATE callbacks SET max_batch_size = 100")
        await conn.execute("ANALYZE queue")
        claim = "EXPLAIN (FORMAT JSON) " + SQL["claim"]
        [plan] = await conn.fetchval(claim, "w", [], [], [], 40, 1000, 300.0, 0.2, 400)

    def nodes(node: dict) -> list[dict]:
        return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]

    plan_nodes = nodes(plan["Plan"])
    sorted_keys = [key for n in plan_nodes for key in n.get("Sort Key", [])]  # random() shuffles callbacks
    assert not [key for key in sorted_keys if "next_attempt_at" in key], sorted_keys
    assert any(n.get("Index Name") == "queue_claim" for n in plan_nodes), plan
    assert any(n["Node Type"] == "Tid Scan" for n in plan_nodes), plan  # the update finds its rows directly
    assert not [n for n in plan_nodes if n["Node Type"] == "Seq Scan" and n["Relation Name"] == "queue"], plan
    events = [n for n in plan_nodes if n.get("Relation Name", "").startswith("events_")]
    assert events and all(n["Node Type"].startswith("Index") for n in events), plan


async def test_an_ordered_claim_finds_each_messages_head_by_index_and_takes_one_event_per_message(database):
    """Ordered per messageKey: 20,000 due deliveries, 20 for each of 1,000 messages. A claim asks, for each
    row it walks, whether an earlier event of its message still waits: a probe of the partial index over
    ordered rows, never a scan, and what it leases is each message's first event only."""
    from dispatcher.delivery.queue import SQL, claim

    async with database.pool.acquire() as conn:
        await due_deliveries(conn, 20000)
        await conn.execute("UPDATE callbacks SET ordering = 'messageKey'")
        await conn.execute(
            "UPDATE queue q SET message_key = 'm' || (e.id % 1000) FROM events e WHERE e.id = q.event_id"
        )
        await conn.execute("ANALYZE queue")
        [plan] = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) " + SQL["claim"], "w", [], [], [], 40, 1000, 300.0, 0.2, 400
        )
        rows = await claim(conn, "w", held={}, share=4000, limit=4000, lease=300.0, linger=0.2, room=4000)
        firsts = await conn.fetch("SELECT min(event_id) AS first FROM queue GROUP BY message_key")

    def nodes(node: dict) -> list[dict]:
        return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]

    plan_nodes = nodes(plan["Plan"])
    assert any(n.get("Index Name") == "queue_ordered" for n in plan_nodes), plan
    assert not [n for n in plan_nodes if n["Node Type"] == "Seq Scan" and n["Relation Name"] == "queue"], plan
    assert sorted(r["event_id"] for r in rows) == sorted(r["first"] for r in firsts)
    assert len({r["ordered_key"] for r in rows}) == len(rows) == 1000


async def test_an_ordered_message_with_an_event_in_flight_has_nothing_else_claimed_even_an_earlier_one(database):
    """Two events of one message recorded concurrently may commit in either order: the later one can be
    in flight by the time the earlier one appears. The earlier one then waits for it."""
    from dispatcher.delivery.queue import claim

    async with database.pool.acquire() as conn:
        await due_deliveries(conn, 3)
        await conn.execute("UPDATE callbacks SET ordering = 'messageKey'")
        await conn.execute("UPDATE queue SET message_key = CASE WHEN event_id < 3 THEN 'm' ELSE 'other' END")
        await conn.execute("UPDATE queue SET leased_until = now() + interval '5 minutes' WHERE event_id = 2")
        rows = await claim(conn, "w", held={}, share=10, limit=10, lease=300.0, linger=0.2, room=10)
        assert [r["ordered_key"] for r in rows] == ["other"]
        await conn.execute("DELETE FROM queue WHERE event_id = 2")  # its outcome: finished
        rows = await claim(conn, "w", held={}, share=10, limit=10, lease=300.0, linger=0.2, room=10)
        assert [(r["ordered_key"], r["event_id"]) for r in rows] == [("m", 1)]


async def test_recording_events_does_not_wait_while_the_worker_holds_its_callbacks_health(
    api: Api, database, receiver: Receiver
):
    """Deliveries reference their callback: a flush that locks the callback row to update its health
    must not block (or be blocked by) the inserts of events being recorded for it."""
    from dispatcher import ids
    from dispatcher.delivery import queue

    callback_id, _ = await setup_callback(api, receiver)
    cb = ids.decode("cb", callback_id, "callback")
    async with database.pool.acquire() as conn, conn.transaction():
        await queue.lock_callbacks(conn, [cb])
        status, body = await asyncio.wait_for(api.post("/v1/events", {"type": "sent", "messageKey": "m1"}), 5)
        assert status == 201, body
    assert await database.pool.fetchval("SELECT count(*) FROM queue WHERE callback_id = $1", cb) == 1


async def test_a_claim_skips_the_wal_flush_wait_for_itself_only(database):
    """A lost claim only makes its rows due again, so its commit does not wait for the WAL flush; the
    setting must end with the claim, or the outcomes written next on that connection could be lost."""
    from dispatcher.delivery.queue import claim

    async with database.pool.acquire() as conn:
        await due_deliveries(conn, 20)
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        async with conn.transaction():
            assert len(await claim(conn, "w", held={}, share=40, limit=10, lease=300.0, linger=0.2, room=400)) == 10
            assert await conn.fetchval("SHOW synchronous_commit") == "off"
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        as_the_worker = await claim(conn, "w", held={}, share=40, limit=10, lease=300.0, linger=0.2, room=400)
        assert len(as_the_worker) == 10
        assert await conn.fetchval("SHOW synchronous_commit") == "on"


@pytest.mark.parametrize(("room", "expected"), [(4, [1, 1, 1, 1]), (15, [1] * 5 + [2] * 5), (20, [2] * 10)])
async def test_a_claim_shares_the_workers_room_evenly_over_the_ready_callbacks(database, room, expected):
    """Ten callbacks with work due: a worker with room for 4 jobs gives 4 of them one each (the rest wait
    for the next claim), with room for 15 five get 2 and five 1, with room for 20 each gets 2; never more
    than the room, and none crowds out the others."""
    from dispatcher.delivery.queue import claim

    async with database.pool.acquire() as conn:
        await due_deliveries(conn, 5, callbacks=10)
        rows = await claim(conn, "w", held={}, share=40, limit=1000, lease=300.0, linger=0.2, room=room)
    per_callback = sorted(Counter(r["callback_id"] for r in rows).values())
    assert per_callback == expected


async def test_a_claim_hands_each_callback_no_more_than_its_own_share(database):
    """Three callbacks with 10 due each: one the worker knows as slow (share 1, holding none), one holding
    3 of its share of 5, and one it does not know (the default share, 4)."""
    from dispatcher.delivery.queue import claim

    async with database.pool.acquire() as conn:
        await due_deliveries(conn, 10, callbacks=3)
        slow, busy, new = sorted(await conn.fetchval("SELECT array_agg(id) FROM callbacks"))
        held = {slow: (0, 1), busy: (3, 5)}
        rows = await claim(conn, "w", held=held, share=4, limit=1000, lease=300.0, linger=0.2, room=400)
    assert Counter(r["callback_id"] for r in rows) == {slow: 1, busy: 2, new: 4}


async def test_idle_callbacks_take_no_turn_in_a_claim(database):
    """Fifty active callbacks with nothing due and one with work: the claim's room goes to the one."""
    from dispatcher.delivery.queue import claim

    async with database.pool.acquire() as conn:
        await due_deliveries(conn, 10)
        await due_deliveries(conn, 0, callbacks=50, account="idle")
        rows = await claim(conn, "w", held={}, share=40, limit=1000, lease=300.0, linger=0.2, room=4)
    assert len(rows) == 4
