-- name: ping
-- The database answers (liveness probes).
SELECT 1

-- name: schema_table_exists
-- Whether the database has a dispatcher schema yet. pg_class by query (this statement's snapshot), not
-- to_regclass(): that looks the name up in the backend's catalog cache without a lock, which may still
-- hold "no such table" from before the migration lock was granted (another process created the schema).
SELECT EXISTS (
    SELECT 1 FROM pg_class WHERE relname = 'schema_version' AND relnamespace = current_schema()::regnamespace
)

-- name: applied_version
-- The newest schema version recorded.
SELECT max(version) FROM schema_version

-- name: lock_migrations
-- Serialises concurrent `serve` starts creating or upgrading the schema.
SELECT pg_advisory_xact_lock($1)

-- name: record_migration
-- A migration file was applied in this transaction.
INSERT INTO schema_version (version) VALUES ($1)
