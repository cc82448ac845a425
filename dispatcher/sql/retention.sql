-- name: purge_messages
-- Finished messages older than the retention.
DELETE FROM messages WHERE id IN (
    SELECT id FROM messages WHERE created_at < now() - make_interval(secs => $1)
      AND status IN ('sent', 'failed', 'bounced') LIMIT $2)

-- name: purge_bodies
-- Rendered bodies older than the body retention; metadata and events stay.
UPDATE messages SET rendered = NULL WHERE id IN (
    SELECT id FROM messages WHERE rendered IS NOT NULL AND created_at < now() - make_interval(secs => $1) LIMIT $2)

-- name: purge_nonces
-- One-time values (Mailgun tokens) older than twice the timestamp tolerance: a replay that old is stale anyway.
DELETE FROM source_nonces WHERE (source_id, nonce) IN (
    SELECT source_id, nonce FROM source_nonces WHERE seen_at < now() - make_interval(secs => $1) LIMIT $2)

-- name: try_lock
-- One process purges at a time; the others skip the round.
SELECT pg_try_advisory_xact_lock($1)

-- name: purge_rollups
-- The console charts' rolled-up slots older than the retention (by activity_rollups_slot).
DELETE FROM activity_rollups WHERE (account_id, kind, slot, name) IN (
    SELECT account_id, kind, slot, name FROM activity_rollups WHERE slot < now() - make_interval(secs => $1) LIMIT $2)
