-- name: get_delivery
-- One delivery with its event.
SELECT d.*, e.type, e.message_key FROM deliveries d JOIN events e ON e.id = d.event_id
WHERE d.id = $1 AND d.account_id = $2

-- name: delivery_attempts
-- A delivery's attempts ($1: its attempt_ids), in order; purged ones are gone but keep their number.
SELECT a.id, x.number, a.started_at, a.duration_ms, a.status_code, a.error_kind, a.response_body, a.webhook_id, a.events
FROM unnest($1::bigint[]) WITH ORDINALITY AS x(id, number) JOIN attempts a ON a.id = x.id
WHERE a.account_id = $2
ORDER BY x.number

-- name: callback_attempts
-- A callback's requests in the order they were recorded, keyset-paginated; $4: true for 2xx answers only, false for
-- everything else (errors, timeouts, refused addresses), NULL for both.
SELECT id, started_at, duration_ms, status_code, error_kind, response_body, webhook_id, events
FROM attempts
WHERE callback_id = $1 AND account_id = $2 AND id > $3
  AND ($4::boolean IS NULL OR coalesce(status_code BETWEEN 200 AND 299, false) = $4)
  AND ($5::timestamptz IS NULL OR started_at >= $5)
  AND ($6::timestamptz IS NULL OR started_at < $6)
ORDER BY id LIMIT $7

-- name: list_deliveries
-- A callback's deliveries, oldest first, keyset-paginated.
SELECT d.id, d.event_id, d.callback_id, d.status, d.attempts, d.next_attempt_at, d.last_attempt_at,
       d.last_status_code, d.last_error, d.created_at, e.type, e.message_key FROM deliveries d JOIN events e ON e.id = d.event_id
WHERE d.callback_id = $1 AND d.account_id = $2 AND d.id > $3
  AND ($4::text IS NULL OR d.status = $4)
  AND ($5::timestamptz IS NULL OR d.created_at >= $5)
  AND ($6::timestamptz IS NULL OR d.created_at < $6)
ORDER BY d.id LIMIT $7

-- name: retry_delivery
-- Send again now, whatever its state; the retry schedule starts over.
UPDATE deliveries SET status = 'pending', next_attempt_at = now(), lease_owner = NULL, leased_until = '-infinity',
                      retry_base = attempts
WHERE id = $1 AND account_id = $2 RETURNING id

-- name: recover
-- Re-queue a callback's failed deliveries created in a window.
UPDATE deliveries SET status = 'pending', next_attempt_at = now(), lease_owner = NULL, leased_until = '-infinity',
                      retry_base = attempts
WHERE callback_id = $1 AND account_id = $2 AND status = 'failed'
  AND created_at >= $3 AND ($4::timestamptz IS NULL OR created_at < $4)

-- name: delivery_account
-- The account a delivery belongs to, for the operator's CLI (which covers every account).
SELECT account_id FROM deliveries WHERE id = $1
