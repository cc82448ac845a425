-- name: schema_present
-- Whether the database holds dispatcher's schema at all (a read-only command never applies it).
SELECT to_regclass('schema_version') IS NOT NULL

-- name: schema_version
-- The newest schema version applied.
SELECT max(version) FROM schema_version

-- name: delivery_backlog
-- Deliveries waiting to be made, and when the oldest of them became due; one account or all ($1 NULL).
SELECT count(*) AS pending, min(next_attempt_at) AS oldest_due
FROM queue WHERE $1::bigint IS NULL OR account_id = $1

-- name: callbacks_by_status
-- How many callbacks are in each state; one account or all ($1 NULL).
SELECT status, count(*) AS n FROM callbacks
WHERE $1::bigint IS NULL OR account_id = $1
GROUP BY status ORDER BY status

-- name: messages_waiting
-- Messages not sent yet (queued, deferred or scheduled), and when the next one is due; one account or all.
SELECT count(*) AS waiting, min(next_attempt_at) AS next_due
FROM messages WHERE status IN ('queued', 'scheduled') AND ($1::bigint IS NULL OR account_id = $1)
