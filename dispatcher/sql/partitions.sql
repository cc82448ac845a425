-- name: existing
-- The day partitions of history tables ($1: their names), as (parent, partition); none pending detach.
SELECT p.relname AS parent, c.relname AS partition
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname = ANY($1::text[]) AND p.relnamespace = current_schema()::regnamespace AND NOT i.inhdetachpending

-- name: detach_pending
-- Partitions whose DETACH ... CONCURRENTLY was interrupted (a crash, a cancel): finished with FINALIZE.
SELECT p.relname AS parent, c.relname AS partition
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relnamespace = current_schema()::regnamespace AND i.inhdetachpending

-- name: create
-- A day's partition of a history table, unless it exists (the function is in schema.sql).
SELECT history_partition($1::regclass, $2::date)

-- name: oldest_queued
-- The oldest day still being delivered: retention keeps it, and every day after it, of events.
SELECT min(created_at) FROM queue

-- name: detach
-- Takes the day out of the table without blocking reads or writes on it (not in a transaction block).
ALTER TABLE {table} DETACH PARTITION {partition} CONCURRENTLY

-- name: finalize
ALTER TABLE {table} DETACH PARTITION {partition} FINALIZE

-- name: drop
DROP TABLE {partition}

-- name: lock
-- Partitions are created under the migration lock (db.migrate), so processes starting together make each once.
SELECT pg_advisory_xact_lock($1)

-- name: hold_days
-- Keeps every day from being dropped until this transaction ends (a retry moving an old day's delivery
-- back into the queue must not race the check that the day has none).
SELECT pg_advisory_xact_lock_shared($1)

-- name: try_lock_days
-- One process drops days at a time, and only while no transaction holds them (hold_days).
SELECT pg_try_advisory_lock($1)

-- name: unlock_days
SELECT pg_advisory_unlock($1)
