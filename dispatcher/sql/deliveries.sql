-- name: get_delivery
-- One delivery with its event, in the queue (pending) or finished; test: a callback's test event.
SELECT d.*, e.type, e.message_key, e.message_key LIKE 'test\_%' AND e.data @> '{"test": true}' AS test
FROM (SELECT id, account_id, event_id, callback_id, 'pending' AS status, attempts, next_attempt_at, created_at,
             last_attempt_at, last_status_code, last_error, attempt_ids
      FROM queue WHERE id = $1 AND account_id = $2
      UNION ALL
      SELECT id, account_id, event_id, callback_id, status, attempts, NULL, created_at,
             last_attempt_at, last_status_code, last_error, attempt_ids
      FROM deliveries WHERE id = $1 AND account_id = $2) d
JOIN events e ON e.id = d.event_id AND e.recorded_at = d.created_at
LIMIT 1

-- name: delivery_attempts
-- A delivery's attempts ($1: its attempt_ids), in order; purged ones are gone but keep their number.
-- None started before the delivery was created ($3), which skips the days before it.
SELECT a.id, x.number, a.started_at, a.duration_ms, a.status_code, a.error_kind, a.response_body, a.webhook_id, a.events
FROM unnest($1::bigint[]) WITH ORDINALITY AS x(id, number) JOIN attempts a ON a.id = x.id
WHERE a.account_id = $2 AND a.started_at >= $3::timestamptz - interval '1 minute'
ORDER BY x.number

-- name: callback_attempts
-- A callback's requests in the order they were recorded, keyset-paginated; $4: true for 2xx answers only, false for
-- everything else (errors, timeouts, refused addresses), NULL for both.
SELECT id, started_at, duration_ms, status_code, error_kind, response_body, webhook_id, events
FROM attempts
WHERE callback_id = $1 AND account_id = $2 AND id > $3
  AND ($4::boolean IS NULL OR coalesce(status_code BETWEEN 200 AND 299, false) = $4)
  AND started_at >= coalesce($5::timestamptz, '-infinity')
  AND started_at < coalesce($6::timestamptz, 'infinity')
ORDER BY id LIMIT $7

-- name: list_deliveries
-- A callback's deliveries, oldest first, keyset-paginated: the queue's and the finished ones merged by id.
-- Each page row's event is looked up by its key (LATERAL ... LIMIT 1 keeps it a per-row lookup: as a
-- join, the planner may hash every day of events for one page), in the window's days only.
SELECT d.*, e.type, e.message_key, e.test
FROM (SELECT * FROM (
    (SELECT id, event_id, callback_id, 'pending' AS status, attempts, next_attempt_at, last_attempt_at,
            last_status_code, last_error, created_at
     FROM queue
     WHERE callback_id = $1 AND account_id = $2 AND id > $3 AND ($4::text IS NULL OR $4 = 'pending')
       AND created_at >= coalesce($5::timestamptz, '-infinity') AND created_at < coalesce($6::timestamptz, 'infinity')
     ORDER BY id LIMIT $7)
    UNION ALL
    (SELECT id, event_id, callback_id, status, attempts, NULL, last_attempt_at, last_status_code, last_error, created_at
     FROM deliveries
     WHERE callback_id = $1 AND account_id = $2 AND id > $3 AND ($4::text IS NULL OR status = $4)
       AND created_at >= coalesce($5::timestamptz, '-infinity') AND created_at < coalesce($6::timestamptz, 'infinity')
     ORDER BY id LIMIT $7)
) page ORDER BY id LIMIT $7) d
CROSS JOIN LATERAL (
    SELECT e.type, e.message_key, e.message_key LIKE 'test\_%' AND e.data @> '{"test": true}' AS test
    FROM events e
    WHERE e.id = d.event_id AND e.recorded_at = d.created_at
      AND e.recorded_at >= coalesce($5::timestamptz, '-infinity') AND e.recorded_at < coalesce($6::timestamptz, 'infinity')
    LIMIT 1
) e
ORDER BY d.id

-- name: retry_delivery
-- Send again now, whatever its state; the retry schedule starts over. A finished delivery moves back
-- into the queue with its id (and history).
WITH finished AS (
    DELETE FROM deliveries WHERE id = $1 AND account_id = $2
    RETURNING id, account_id, event_id, callback_id, created_at, attempts, attempt_ids, last_attempt_at,
              last_status_code, last_error
),
requeued AS (
    INSERT INTO queue (id, account_id, event_id, callback_id, created_at, attempts, retry_base, attempt_ids,
                       last_attempt_at, last_status_code, last_error, message_key)
    OVERRIDING SYSTEM VALUE
    SELECT id, account_id, event_id, callback_id, created_at, attempts, attempts, attempt_ids, last_attempt_at,
           last_status_code, last_error, ordered_key(callback_id, event_id, created_at)
    FROM finished
    RETURNING id
),
pending AS (  -- one being sent right now keeps its lease: its outcome decides what comes next
    UPDATE queue SET next_attempt_at = now(), retry_base = attempts,
                     lease_owner = CASE WHEN leased_until > now() THEN lease_owner END,
                     leased_until = CASE WHEN leased_until > now() THEN leased_until ELSE '-infinity' END
    WHERE id = $1 AND account_id = $2 RETURNING id
)
SELECT id FROM requeued UNION ALL SELECT id FROM pending

-- name: recover
-- Re-queue a callback's failed deliveries created in a window.
WITH failed AS (
    DELETE FROM deliveries
    WHERE callback_id = $1 AND account_id = $2 AND status = 'failed'
      AND created_at >= $3 AND created_at < coalesce($4::timestamptz, 'infinity')
    RETURNING id, account_id, event_id, callback_id, created_at, attempts, attempt_ids, last_attempt_at,
              last_status_code, last_error
)
INSERT INTO queue (id, account_id, event_id, callback_id, created_at, attempts, retry_base, attempt_ids,
                   last_attempt_at, last_status_code, last_error, message_key)
OVERRIDING SYSTEM VALUE
SELECT id, account_id, event_id, callback_id, created_at, attempts, attempts, attempt_ids, last_attempt_at,
       last_status_code, last_error, ordered_key(callback_id, event_id, created_at)
FROM failed

-- name: delivery_account
-- The account a delivery belongs to, for the operator's CLI (which covers every account).
SELECT account_id FROM queue WHERE id = $1
UNION ALL
SELECT account_id FROM deliveries WHERE id = $1
LIMIT 1

-- name: event_deliveries
-- The deliveries events caused ($2: the events' ids, $3: their recorded_at), queued or finished, each with its callback's name (NULL once deleted); a delivery is dated by its event, so only the events' days are read.
SELECT d.*, c.name AS callback_name
FROM (SELECT id, event_id, callback_id, 'pending' AS status, attempts, next_attempt_at, last_attempt_at,
             last_status_code, last_error, created_at
      FROM queue
      WHERE account_id = $1 AND event_id = ANY($2::bigint[]) AND created_at = ANY($3::timestamptz[])
      UNION ALL
      SELECT id, event_id, callback_id, status, attempts, NULL, last_attempt_at, last_status_code, last_error,
             created_at
      FROM deliveries
      WHERE account_id = $1 AND event_id = ANY($2::bigint[]) AND created_at = ANY($3::timestamptz[])) d
LEFT JOIN callbacks c ON c.id = d.callback_id AND c.account_id = $1
ORDER BY d.event_id, d.id

-- name: delivery_event
-- A delivery's event by its keys ($2 id, $3 recorded_at), shaped as the worker's claim reads it (data as text
-- without the keys the envelope sets), with the callback's format and batch size (NULL once deleted).
SELECT $4::bigint AS id, e.account_id, e.id AS event_id, e.type, e.message_key, e.definition_key, e.recipient,
       e.occurred_at,
       (CASE WHEN e.data ?| '{eventId,messageKey,definitionKey,recipient,occurredAt}'::text[]
             THEN e.data - '{eventId,messageKey,definitionKey,recipient,occurredAt}'::text[]
             ELSE e.data END)::text AS data,
       c.name AS callback_name, c.format, c.max_batch_size
FROM events e
LEFT JOIN callbacks c ON c.id = $5 AND c.account_id = $1
WHERE e.account_id = $1 AND e.id = $2 AND e.recorded_at = $3

-- name: callback_health
-- Per callback ($1) of the account ($2), requests since $3: how many, how many answered 2xx, and the latest failure.
WITH w AS (
    SELECT callback_id, id, started_at, status_code, error_kind, coalesce(status_code BETWEEN 200 AND 299, false) AS ok
    FROM attempts
    WHERE callback_id = ANY($1::bigint[]) AND account_id = $2 AND started_at >= $3
)
SELECT s.callback_id, s.requests, s.succeeded, f.started_at AS last_failure_at, f.status_code AS last_failure_code,
       f.error_kind AS last_failure_error
FROM (SELECT callback_id, count(*) AS requests, count(*) FILTER (WHERE ok) AS succeeded FROM w GROUP BY callback_id) s
LEFT JOIN LATERAL (
    SELECT started_at, status_code, error_kind FROM w WHERE w.callback_id = s.callback_id AND NOT w.ok
    ORDER BY id DESC LIMIT 1
) f ON true

-- name: callback_latency
-- A callback's request durations in [$3, $5) per bucket of $4 seconds: requests and p50, p90, p99 (ms).
SELECT date_bin(make_interval(secs => $4::float8), started_at, $3::timestamptz) AS bucket, count(*) AS requests,
       percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY duration_ms) AS p
FROM attempts
WHERE callback_id = $1 AND account_id = $2 AND started_at >= $3 AND started_at < $5
GROUP BY 1 ORDER BY 1

-- name: recent_deliveries
-- A callback's latest deliveries ($3 at most), newest first: queued and finished, with their events as in list_deliveries.
SELECT d.*, e.type, e.message_key, e.test
FROM (SELECT * FROM (
    (SELECT id, event_id, callback_id, 'pending' AS status, attempts, next_attempt_at, last_attempt_at,
            last_status_code, last_error, created_at
     FROM queue WHERE callback_id = $1 AND account_id = $2 ORDER BY id DESC LIMIT $3)
    UNION ALL
    (SELECT id, event_id, callback_id, status, attempts, NULL, last_attempt_at, last_status_code, last_error, created_at
     FROM deliveries WHERE callback_id = $1 AND account_id = $2 ORDER BY id DESC LIMIT $3)
) page ORDER BY id DESC LIMIT $3) d
CROSS JOIN LATERAL (
    SELECT e.type, e.message_key, e.message_key LIKE 'test\_%' AND e.data @> '{"test": true}' AS test
    FROM events e WHERE e.id = d.event_id AND e.recorded_at = d.created_at
    LIMIT 1
) e
ORDER BY d.id DESC

-- name: recent_attempts
-- A callback's latest requests ($3 at most), newest first.
SELECT id, started_at, duration_ms, status_code, error_kind, response_body, webhook_id, events
FROM attempts WHERE callback_id = $1 AND account_id = $2 ORDER BY id DESC LIMIT $3

-- name: callback_attempt
-- One request in a callback's attempt log.
SELECT id, started_at, duration_ms, status_code, error_kind, response_body, webhook_id, events
FROM attempts WHERE id = $1 AND callback_id = $2 AND account_id = $3
