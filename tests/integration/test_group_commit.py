"""The group writer's policy against a real PostgreSQL: what is grouped, and what a failure does."""

from __future__ import annotations

import asyncio

import asyncpg

from dispatcher.db import CONNECTION_ERRORS
from dispatcher.group_commit import GroupWriter


async def run(writer: GroupWriter, n: int, **weight) -> list:
    try:
        return await asyncio.gather(*(writer.write(i, **weight) for i in range(n)), return_exceptions=True)
    finally:
        await writer.aclose()


async def test_a_lost_connection_fails_the_whole_group_at_once_without_retrying_each_request(database):
    groups: list[list[int]] = []

    async def write_group(conn, items):
        groups.append(items)
        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")  # the server goes away mid-write
        return items

    results = await run(GroupWriter(database.pool, write_group, max_items=1000), 20)
    assert all(isinstance(r, CONNECTION_ERRORS) for r in results), results
    assert sorted(i for g in groups for i in g) == list(range(20))  # each request tried once


async def test_a_request_the_database_refuses_is_retried_alone_and_fails_alone(database):
    groups: list[list[int]] = []

    async def write_group(conn, items):
        groups.append(items)
        await conn.execute("CREATE TEMP TABLE IF NOT EXISTS t (n int CHECK (n <> 7)) ON COMMIT DROP")
        await conn.execute("INSERT INTO t SELECT unnest($1::int[])", items)
        return items

    results = await run(GroupWriter(database.pool, write_group, max_items=1000), 20)
    assert isinstance(results[7], asyncpg.CheckViolationError)
    assert [r for i, r in enumerate(results) if i != 7] == [i for i in range(20) if i != 7]
    assert len(groups[0]) > 1 and [7] in groups


async def test_groups_stop_growing_at_the_byte_limit(database):
    groups: list[list[int]] = []

    async def write_group(conn, items):
        groups.append(items)
        await conn.execute("SELECT 1")
        return items

    results = await run(GroupWriter(database.pool, write_group, max_items=1000, max_bytes=1000), 10, nbytes=400)
    assert results == list(range(10))
    assert max(len(g) for g in groups) == 2


async def test_nothing_is_written_when_a_group_fails_before_its_commit(database):
    """One transaction per group: a failure after the insert (here: a lookup) leaves nothing behind, so
    writing the requests again one by one cannot store anything twice."""

    async def write_group(conn, items):
        await conn.execute("CREATE TABLE IF NOT EXISTS written (n int)")
        await conn.execute("INSERT INTO written SELECT unnest($1::int[])", items)
        if len(items) > 1:
            await conn.execute("SELECT 1/0")  # refused after the insert: the group is retried alone
        return items

    await database.pool.execute("CREATE TABLE IF NOT EXISTS written (n int)")
    results = await run(GroupWriter(database.pool, write_group, max_items=1000), 10)
    assert results == list(range(10))
    assert sorted(await database.pool.fetchval("SELECT array_agg(n) FROM written")) == list(range(10))
