-- name: events_per_bucket
-- An account's events recorded in [$2, $3), counted per bucket ($4 wide, from $2) and type; only the window's days are read.
SELECT date_bin($4::interval, recorded_at, $2) AS bucket, type, count(*) AS n
FROM events
WHERE account_id = $1 AND recorded_at >= $2 AND recorded_at < $3
GROUP BY 1, 2

-- name: attempts_per_bucket
-- An account's delivery requests started in [$2, $3) per bucket ($4 wide, from $2): the deliveries each carried, succeeded (2xx) or failed.
SELECT date_bin($4::interval, started_at, $2) AS bucket,
       coalesce(sum(events) FILTER (WHERE status_code BETWEEN 200 AND 299), 0) AS succeeded,
       coalesce(sum(events) FILTER (WHERE status_code IS NULL OR status_code NOT BETWEEN 200 AND 299), 0) AS failed
FROM attempts
WHERE account_id = $1 AND started_at >= $2 AND started_at < $3
GROUP BY 1

-- name: callback_backlog
-- An account's callbacks with their queued deliveries (the oldest $2, by the claim index): how many, how many due, since when the oldest due one waits.
SELECT c.id, c.name, c.url, c.status, c.consecutive_failures, c.failing_since, c.disabled_reason, c.paused_until,
       q.queued, q.due, q.oldest_due
FROM callbacks c
CROSS JOIN LATERAL (
    SELECT count(*) AS queued, count(*) FILTER (WHERE next_attempt_at <= now()) AS due,
           min(next_attempt_at) FILTER (WHERE next_attempt_at <= now()) AS oldest_due
    FROM (SELECT d.next_attempt_at FROM queue d WHERE d.callback_id = c.id ORDER BY d.next_attempt_at LIMIT $2) d
) q
WHERE c.account_id = $1
ORDER BY c.id

-- name: recent_events
-- The live view's first page: an account's newest events of the last day, newest first.
SELECT id, type, message_key, recipient, occurred_at, recorded_at, left(data::text, 200) AS data
FROM events
WHERE account_id = $1 AND recorded_at >= now() - interval '1 day'
ORDER BY id DESC
LIMIT $2

-- name: events_after
-- The live stream: an account's events after id $2 (of the last day), oldest first.
SELECT id, type, message_key, recipient, occurred_at, recorded_at, left(data::text, 200) AS data
FROM events
WHERE account_id = $1 AND id > $2 AND recorded_at >= now() - interval '1 day'
ORDER BY id
LIMIT $3

-- name: recent_attempts
-- The live view's first page: the newest delivery requests of the last day to an account's callbacks (those in $2; NULL: all), newest first.
SELECT a.id, a.callback_id, c.name AS callback, a.events, a.started_at, a.duration_ms, a.status_code, a.error_kind
FROM callbacks c
CROSS JOIN LATERAL (
    SELECT * FROM attempts a
    WHERE a.callback_id = c.id AND a.account_id = $1 AND a.started_at >= now() - interval '1 day'
    ORDER BY a.id DESC
    LIMIT $3
) a
WHERE c.account_id = $1 AND ($2::bigint[] IS NULL OR c.id = ANY($2))
ORDER BY a.id DESC
LIMIT $3

-- name: attempts_after
-- The live stream: delivery requests after id $3 (of the last day) to an account's callbacks (those in $2; NULL: all), oldest first.
SELECT a.id, a.callback_id, c.name AS callback, a.events, a.started_at, a.duration_ms, a.status_code, a.error_kind
FROM callbacks c
CROSS JOIN LATERAL (
    SELECT * FROM attempts a
    WHERE a.callback_id = c.id AND a.account_id = $1 AND a.id > $3 AND a.started_at >= now() - interval '1 day'
    ORDER BY a.id
    LIMIT $4
) a
WHERE c.account_id = $1 AND ($2::bigint[] IS NULL OR c.id = ANY($2))
ORDER BY a.id
LIMIT $4

-- name: live_cursor
-- Where a new live stream starts: the newest event and delivery request ids of an account (0 when none).
SELECT (SELECT coalesce(max(id), 0) FROM events
        WHERE account_id = $1 AND recorded_at >= now() - interval '1 day') AS event_id,
       (SELECT coalesce(max(a.id), 0) FROM callbacks c
        CROSS JOIN LATERAL (SELECT max(id) AS id FROM attempts a
                            WHERE a.callback_id = c.id AND a.started_at >= now() - interval '1 day') a
        WHERE c.account_id = $1) AS attempt_id

-- name: rolled_up_slots
-- The slots the rollups hold, [since, upto) (no row before the first rollup); the charts read the others raw.
SELECT since, upto FROM activity_rolled

-- name: events_rolled_up
-- An account's rolled-up events of the slots in [$2, $3) per bucket ($4 wide, from $2) and type.
SELECT date_bin($4::interval, slot, $2) AS bucket, name AS type, sum(n)::bigint AS n
FROM activity_rollups
WHERE account_id = $1 AND kind = 'events' AND slot >= $2 AND slot < $3
GROUP BY 1, 2

-- name: attempts_rolled_up
-- An account's rolled-up deliveries of the slots in [$2, $3) per bucket ($4 wide, from $2), succeeded and failed.
SELECT date_bin($4::interval, slot, $2) AS bucket,
       coalesce(sum(n) FILTER (WHERE name = 'succeeded'), 0)::bigint AS succeeded,
       coalesce(sum(n) FILTER (WHERE name = 'failed'), 0)::bigint AS failed
FROM activity_rollups
WHERE account_id = $1 AND kind = 'attempts' AND slot >= $2 AND slot < $3
GROUP BY 1

-- name: roll_up_events
-- Every account's events recorded in [$1, $2) counted per slot ($3 wide, from $1) and type, by each account's index; again: the same counts.
INSERT INTO activity_rollups (account_id, kind, slot, name, n)
SELECT a.id, 'events', e.slot, e.type, e.n
FROM accounts a
CROSS JOIN LATERAL (
    SELECT date_bin($3::interval, recorded_at, $1) AS slot, type, count(*) AS n
    FROM events
    WHERE account_id = a.id AND recorded_at >= $1 AND recorded_at < $2
    GROUP BY 1, 2
) e
ON CONFLICT (account_id, kind, slot, name) DO UPDATE SET n = EXCLUDED.n

-- name: roll_up_attempts
-- Every account's deliveries in requests started in [$1, $2) per slot ($3 wide, from $1), succeeded (2xx) and failed, as attempts_per_bucket counts them.
INSERT INTO activity_rollups (account_id, kind, slot, name, n)
SELECT a.id, 'attempts', t.slot, o.name, o.n
FROM accounts a
CROSS JOIN LATERAL (
    SELECT date_bin($3::interval, started_at, $1) AS slot,
           coalesce(sum(events) FILTER (WHERE status_code BETWEEN 200 AND 299), 0) AS succeeded,
           coalesce(sum(events) FILTER (WHERE status_code IS NULL OR status_code NOT BETWEEN 200 AND 299), 0) AS failed
    FROM attempts
    WHERE account_id = a.id AND started_at >= $1 AND started_at < $2
    GROUP BY 1
) t
CROSS JOIN LATERAL (VALUES ('succeeded', t.succeeded), ('failed', t.failed)) o(name, n)
WHERE o.n > 0
ON CONFLICT (account_id, kind, slot, name) DO UPDATE SET n = EXCLUDED.n

-- name: rolled_up
-- The rollups now hold the slots up to $2 (from $1, the first time).
INSERT INTO activity_rolled (since, upto) VALUES ($1, $2)
ON CONFLICT (one) DO UPDATE SET upto = EXCLUDED.upto
