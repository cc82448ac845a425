-- name: claim
-- Claim due deliveries under a lease (leased_until: a HOT update, see schema.sql), per claimable
-- callback (so a huge backlog behind a disabled or paused callback costs nothing). A failing
-- callback gets one probe at a time; the others what fits in this worker's share for each (what it
-- has recently been able to take: see policy.Window), and together no more than the worker has room
-- for, split evenly (in random order) so busy callbacks cannot crowd out the rest. A batching
-- callback waits until it has a full batch or its oldest row has lingered long enough.
-- $1 worker id, $2/$3/$4 callbacks this worker knows, the jobs it holds for each and each one's
-- share, $5 the share of any other callback, $6 row limit, $7 lease seconds, $8 linger seconds,
-- $9 jobs the worker has room for.
WITH nosync AS (  -- a claim lost in a crash only makes its rows due again: no need to wait for the WAL flush
    SELECT set_config('synchronous_commit', 'off', true)
),
known AS (
    SELECT * FROM unnest($2::bigint[], $3::int[], $4::int[]) AS h(callback_id, jobs, share)
),
ready AS (
    SELECT c.id, c.max_batch_size, c.status = 'failing' AS failing, coalesce(h.jobs, 0) AS jobs,
           coalesce(h.share, $5) AS share
    FROM callbacks c LEFT JOIN known h ON h.callback_id = c.id
    CROSS JOIN LATERAL (  -- its oldest due row, if any (idle callbacks take no turn). The probes follow
        -- the claim index by their ORDER BY: as EXISTS, or unordered, the planner may scan the table.
        SELECT d.next_attempt_at AS oldest FROM deliveries d
        WHERE d.callback_id = c.id AND d.status = 'pending' AND d.next_attempt_at <= now() AND d.leased_until <= now()
        ORDER BY d.next_attempt_at, d.id
        LIMIT 1
    ) due
    WHERE c.status IN ('active', 'failing') AND c.paused_until <= now()
      AND coalesce(h.jobs, 0) < CASE WHEN c.status = 'failing' THEN 1 ELSE coalesce(h.share, $5) END
      AND (c.max_batch_size = 1 OR c.status = 'failing' OR due.oldest <= now() - make_interval(secs => $8)
           OR (SELECT count(*) FROM (SELECT 1 FROM deliveries f
                                     WHERE f.callback_id = c.id AND f.status = 'pending' AND f.next_attempt_at <= now()
                                       AND f.leased_until <= now()
                                     ORDER BY f.next_attempt_at, f.id
                                     LIMIT c.max_batch_size) full_batch) >= c.max_batch_size)
),
shuffled AS (
    SELECT *, row_number() OVER (ORDER BY random()) AS turn, count(*) OVER () AS n FROM ready
),
rooms AS (  -- rows each callback may take: at most $9 callbacks get a turn, sharing $9 jobs
    SELECT id, CASE WHEN failing THEN 1 - jobs
                    ELSE least(share - jobs, $9 / least(n, $9) + (turn <= $9 % least(n, $9))::int)
                         * max_batch_size END AS room
    FROM shuffled
    WHERE turn <= $9
    ORDER BY turn
),
picked AS (  -- by ctid: the rows are locked by this statement, so the update finds them directly
    SELECT d.ctid
    FROM rooms c
    CROSS JOIN LATERAL (
        SELECT d.ctid FROM deliveries d
        WHERE d.callback_id = c.id AND d.status = 'pending' AND d.next_attempt_at <= now() AND d.leased_until <= now()
        ORDER BY d.next_attempt_at, d.id
        LIMIT c.room
        FOR NO KEY UPDATE OF d SKIP LOCKED
    ) d
    LIMIT $6
)
UPDATE deliveries d
SET leased_until = now() + make_interval(secs => $7), lease_owner = $1
FROM nosync, events e, callbacks c
WHERE d.ctid = ANY (ARRAY(SELECT ctid FROM picked))  -- a TID scan: a join may hash the whole table instead
  AND e.id = d.event_id AND c.id = d.callback_id
RETURNING d.id, d.account_id, d.callback_id, d.attempts, d.retry_base,
          c.url, c.max_batch_size, c.secrets_version, c.format,
          e.id AS event_id, e.type, e.message_key, e.definition_key, e.recipient, e.occurred_at,
          -- The worker builds the payload around this text (dispatcher/delivery/payload.py), so numbers
          -- reach receivers exactly as stored. The envelope's keys win over the event's own.
          (CASE WHEN e.data ?| '{eventId,messageKey,definitionKey,recipient,occurredAt}'::text[]
                THEN e.data - '{eventId,messageKey,definitionKey,recipient,occurredAt}'::text[]
                ELSE e.data END)::text AS data

-- name: complete
-- Record outcomes: one attempt row per request ($1-$9, in request order), and per delivery ($10-$14,
-- each with the 1-based number of its request) the attempt appended to its log. Its state changes
-- only if this worker still holds it: a lost lease means someone else owns it now. One UPDATE decides
-- both on the row's latest version (a CASE per column), so a lease taken over mid-statement cannot
-- drop the attempt from the log. Requests of callbacks deleted meanwhile are not logged.
WITH req AS (
    SELECT nextval(pg_get_serial_sequence('attempts', 'id')) AS attempt_id, r.*
    FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::int[], $5::timestamptz[], $6::float8[], $7::int[],
                $8::text[], $9::text[])
         WITH ORDINALITY AS r(account_id, callback_id, webhook_id, events, started_at, duration_ms, code, error_kind,
                              excerpt, n)
),
logged AS (
    INSERT INTO attempts (id, account_id, callback_id, webhook_id, events, started_at, duration_ms, status_code,
                          error_kind, response_body)
    OVERRIDING SYSTEM VALUE
    SELECT attempt_id, req.account_id, callback_id, webhook_id, events, started_at, duration_ms, code, error_kind,
           excerpt
    FROM req JOIN callbacks c ON c.id = req.callback_id
),
u AS (
    SELECT u.*, req.attempt_id, req.started_at, req.code,
           coalesce(req.error_kind, CASE WHEN req.code BETWEEN 200 AND 299 THEN NULL ELSE 'http_' || req.code END)
               AS error
    FROM unnest($10::bigint[], $11::bigint[], $12::text[], $13::int[], $14::float8[]) AS u(id, n, status, attempts, delay)
    JOIN req USING (n)
)
UPDATE deliveries d
SET attempt_ids = d.attempt_ids || u.attempt_id,
    status = CASE WHEN d.lease_owner = $15 THEN u.status ELSE d.status END,
    attempts = CASE WHEN d.lease_owner = $15 THEN u.attempts ELSE d.attempts END,
    next_attempt_at = CASE WHEN d.lease_owner = $15 THEN now() + make_interval(secs => u.delay)
                           ELSE d.next_attempt_at END,
    last_attempt_at = CASE WHEN d.lease_owner = $15 THEN u.started_at ELSE d.last_attempt_at END,
    last_status_code = CASE WHEN d.lease_owner = $15 THEN u.code ELSE d.last_status_code END,
    last_error = CASE WHEN d.lease_owner = $15 THEN u.error ELSE d.last_error END,
    lease_owner = CASE WHEN d.lease_owner = $15 THEN NULL ELSE d.lease_owner END,
    leased_until = CASE WHEN d.lease_owner = $15 THEN '-infinity' ELSE d.leased_until END
FROM u
WHERE d.id = u.id

-- name: lock_callbacks
-- Current health of the callbacks a flush touches. NO KEY UPDATE: the deliveries being inserted for
-- them hold KEY SHARE locks (foreign keys), which FOR UPDATE would wait for and block.
SELECT id, account_id, name, url, status, consecutive_failures, failing_since, paused_until, disabled_reason
FROM callbacks WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE

-- name: set_health
-- Store the health the policy decided.
UPDATE callbacks c
SET status = u.status, consecutive_failures = u.failures, failing_since = u.since,
    paused_until = coalesce(u.paused, '-infinity'), disabled_reason = u.reason, updated_at = now()
FROM unnest($1::bigint[], $2::text[], $3::int[], $4::timestamptz[], $5::timestamptz[], $6::text[])
     AS u(id, status, failures, since, paused, reason)
WHERE c.id = u.id

-- name: release
-- Hand back what this worker holds but will not send (shutdown, or it could not be sent), due in $3 s.
UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $3), lease_owner = NULL,
                      leased_until = '-infinity'
WHERE lease_owner = $1 AND status = 'pending' AND id = ANY($2::bigint[])

-- name: live_secrets
-- The secrets a request is signed with, newest first (as stored: the format decides how each signs).
SELECT secret_enc FROM callback_secrets
WHERE callback_id = $1 AND (valid_until IS NULL OR valid_until > now())
ORDER BY id DESC

-- name: notify
-- Wake workers; delivered at commit, collapsed within a transaction.
SELECT pg_notify('dispatcher_deliveries', '')
