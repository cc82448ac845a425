-- name: claim
-- Claim due deliveries from the queue under a lease (leased_until: a HOT update, see schema.sql), per claimable
-- callback (so a huge backlog behind a disabled or paused callback costs nothing). A failing
-- callback gets one probe at a time; the others what fits in this worker's share for each (what it
-- has recently been able to take: see policy.Window), and together no more than the worker has room
-- for, split evenly (in random order) so busy callbacks cannot crowd out the rest. A batching
-- callback waits until it has a full batch or its oldest row has lingered long enough.
-- Delivery controls: an ordered callback's row is claimable only while no earlier event of its message
-- waits for that callback (finished rows leave the queue), so one message never has two in flight; a
-- rate-limited callback is claimed no more requests than its bucket holds now (callback_rates, shared by
-- every worker). Each request takes its token just before it is sent (take_token), so a request that
-- starts late is counted when it goes, not when it was claimed.
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
           coalesce(h.share, $5) AS share, b.tokens
    FROM callbacks c LEFT JOIN known h ON h.callback_id = c.id
    LEFT JOIN callback_rates r ON r.callback_id = c.id
    CROSS JOIN LATERAL (  -- requests its rate limit allows now (NULL: no limit)
        SELECT floor(rate_tokens(r, c.rate_per_second, c.rate_burst))::int AS tokens
    ) b
    CROSS JOIN LATERAL (  -- its oldest due row, if any (idle callbacks take no turn). The probes follow
        -- the claim index by their ORDER BY: as EXISTS, or unordered, the planner may scan the table.
        SELECT d.next_attempt_at AS oldest FROM queue d
        WHERE d.callback_id = c.id AND d.next_attempt_at <= now() AND d.leased_until <= now()
        ORDER BY d.next_attempt_at, d.id
        LIMIT 1
    ) due
    WHERE c.status IN ('active', 'failing') AND c.paused_until <= now()
      AND coalesce(h.jobs, 0) < CASE WHEN c.status = 'failing' THEN 1 ELSE coalesce(h.share, $5) END
      AND (c.rate_per_second IS NULL OR b.tokens >= 1)
      AND (c.max_batch_size = 1 OR c.status = 'failing' OR due.oldest <= now() - make_interval(secs => $8)
           OR (SELECT count(*) FROM (SELECT 1 FROM queue f
                                     WHERE f.callback_id = c.id AND f.next_attempt_at <= now()
                                       AND f.leased_until <= now()
                                     ORDER BY f.next_attempt_at, f.id
                                     LIMIT c.max_batch_size) full_batch) >= c.max_batch_size)
),
shuffled AS (
    SELECT *, row_number() OVER (ORDER BY random()) AS turn, count(*) OVER () AS n FROM ready
),
rooms AS (  -- rows each callback may take: at most $9 callbacks get a turn, sharing $9 jobs (and its tokens)
    SELECT id,
           least(CASE WHEN failing THEN 1 - jobs
                      ELSE least(share - jobs, $9 / least(n, $9) + (turn <= $9 % least(n, $9))::int) END,
                 coalesce(tokens, $9)) * max_batch_size AS room
    FROM shuffled
    WHERE turn <= $9
    ORDER BY turn
),
picked AS (  -- by ctid: the rows are locked by this statement, so the update finds them directly
    SELECT d.ctid
    FROM rooms c
    CROSS JOIN LATERAL (
        SELECT d.ctid FROM queue d
        WHERE d.callback_id = c.id AND d.next_attempt_at <= now() AND d.leased_until <= now()
          -- an ordered row goes first of its message, and only while none of the message is in flight
          -- (a later event leased before a concurrently recorded or re-queued earlier one appeared). As
          -- ORDER BY … LIMIT 1 the probe follows queue_ordered; as NOT EXISTS the planner may scan the
          -- table for each row.
          AND (d.message_key IS NULL
               OR NOT EXISTS (SELECT FROM (SELECT 1 FROM queue p
                                           WHERE p.callback_id = d.callback_id AND p.message_key = d.message_key
                                             AND (p.event_id < d.event_id OR p.leased_until > now())
                                           ORDER BY p.event_id
                                           LIMIT 1) blocking))
        ORDER BY d.next_attempt_at, d.id
        LIMIT c.room
        FOR NO KEY UPDATE OF d SKIP LOCKED
    ) d
    LIMIT $6
),
leased AS (
    UPDATE queue d
    SET leased_until = now() + make_interval(secs => $7), lease_owner = $1
    FROM nosync, callbacks c
    WHERE d.ctid = ANY (ARRAY(SELECT ctid FROM picked))  -- a TID scan: a join may hash the whole table instead
      AND c.id = d.callback_id
    RETURNING d.id, d.account_id, d.callback_id, d.attempts, d.retry_base, d.event_id, d.created_at, d.message_key,
              c.url, c.max_batch_size, c.secrets_version, c.format, c.rate_per_second, c.rate_burst
)
SELECT l.id, l.account_id, l.callback_id, l.attempts, l.retry_base, l.url, l.max_batch_size, l.secrets_version,
       l.format, l.message_key AS ordered_key, l.rate_per_second, l.rate_burst, e.*
FROM leased l
CROSS JOIN LATERAL (  -- each row's event from its own day's index: as a join, the planner may hash every day
    SELECT e.id AS event_id, e.type, e.message_key, e.definition_key, e.recipient, e.occurred_at,
           -- The worker builds the payload around this text (dispatcher/delivery/payload.py), so numbers
           -- reach receivers exactly as stored. The envelope's keys win over the event's own.
           (CASE WHEN e.data ?| '{eventId,messageKey,definitionKey,recipient,occurredAt}'::text[]
                 THEN e.data - '{eventId,messageKey,definitionKey,recipient,occurredAt}'::text[]
                 ELSE e.data END)::text AS data
    FROM events e
    WHERE e.id = l.event_id AND e.recorded_at = l.created_at
    LIMIT 1
) e

-- name: complete
-- Record outcomes: one attempt row per request ($1-$9, in request order), and per delivery ($10-$14,
-- each with the 1-based number of its request) the attempt appended to its log. Its state changes
-- only if this worker still holds it: a lost lease means someone else owns it now. A final outcome
-- (succeeded, failed) moves the row from the queue into `deliveries`; any other result updates it
-- in the queue. The two conditions are exclusive and PostgreSQL re-checks each on a row's latest
-- version, so a lease taken over mid-statement cannot drop the attempt from the log. Requests of
-- callbacks deleted meanwhile are not logged; an attempt whose delivery another worker has finished
-- meanwhile stays in the callback's attempt log only. The first request wakes the console's live streams
-- of the accounts involved (one NOTIFY per statement on dispatcher_live; req is materialised, every row
-- computed once). An ordered callback's delivery ($15 its messageKey, $16 its event; NULL otherwise) that
-- stays pending pushes the later events of its message to its own next try (claims would only find them
-- waiting behind it until then); a finished one makes the next of them due in `release_next`.
WITH req AS (
    SELECT nextval(pg_get_serial_sequence('attempts', 'id')) AS attempt_id, r.*,
           CASE WHEN r.n = 1 THEN pg_notify('dispatcher_live', (
               SELECT CASE WHEN count(DISTINCT a) <= 200 THEN string_agg(DISTINCT a::text, ',') ELSE '' END
               FROM unnest($1::bigint[]) a)) END AS told
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
    SELECT u.*, req.callback_id, req.attempt_id, req.started_at, req.code,
           coalesce(req.error_kind, CASE WHEN req.code BETWEEN 200 AND 299 THEN NULL ELSE 'http_' || req.code END)
               AS error
    FROM unnest($10::bigint[], $11::bigint[], $12::text[], $13::int[], $14::float8[], $15::text[], $16::bigint[])
         AS u(id, n, status, attempts, delay, message_key, event_id)
    JOIN req USING (n)
),
behind AS (
    UPDATE queue f
    SET next_attempt_at = now() + make_interval(secs => u.delay)
    FROM u
    WHERE u.message_key IS NOT NULL AND u.status = 'pending'
      AND f.callback_id = u.callback_id AND f.message_key = u.message_key AND f.event_id > u.event_id
      AND f.leased_until <= now() AND f.id NOT IN (SELECT id FROM u)
      AND f.next_attempt_at < now() + make_interval(secs => u.delay)
),
finished AS (
    DELETE FROM queue d USING u
    WHERE d.id = u.id AND d.lease_owner = $17 AND u.status <> 'pending'
    RETURNING d.id, d.account_id, d.event_id, d.callback_id, u.status, u.attempts, d.retry_base, d.created_at,
              u.started_at, u.code, u.error, d.attempt_ids || u.attempt_id AS attempt_ids
),
archived AS (
    INSERT INTO deliveries (id, account_id, event_id, callback_id, status, attempts, retry_base, created_at,
                            last_attempt_at, last_status_code, last_error, attempt_ids)
    SELECT * FROM finished
)
UPDATE queue d
SET attempt_ids = d.attempt_ids || u.attempt_id,
    attempts = CASE WHEN d.lease_owner = $17 THEN u.attempts ELSE d.attempts END,
    next_attempt_at = CASE WHEN d.lease_owner = $17 THEN now() + make_interval(secs => u.delay)
                           ELSE d.next_attempt_at END,
    last_attempt_at = CASE WHEN d.lease_owner = $17 THEN u.started_at ELSE d.last_attempt_at END,
    last_status_code = CASE WHEN d.lease_owner = $17 THEN u.code ELSE d.last_status_code END,
    last_error = CASE WHEN d.lease_owner = $17 THEN u.error ELSE d.last_error END,
    lease_owner = CASE WHEN d.lease_owner = $17 THEN NULL ELSE d.lease_owner END,
    leased_until = CASE WHEN d.lease_owner = $17 THEN '-infinity' ELSE d.leased_until END
FROM u
WHERE d.id = u.id AND NOT (d.lease_owner IS NOT DISTINCT FROM $17 AND u.status <> 'pending')

-- name: release_next
-- The next event of each finished ordered delivery's message ($1-$4: callback, messageKey, event and id
-- of the delivery) is due now. A statement of its own after `complete`, in the same transaction: the
-- finish waited for any fan-out holding the finished row (KEY SHARE, sql/events.sql), so this snapshot
-- sees what that fan-out queued behind it. A delivery still queued (its lease lost) releases nothing.
UPDATE queue f
SET next_attempt_at = now()
FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) AS u(callback_id, message_key, event_id, id)
WHERE f.callback_id = u.callback_id AND f.message_key = u.message_key AND f.next_attempt_at > now()
  AND f.leased_until <= now()
  AND NOT EXISTS (SELECT 1 FROM queue d WHERE d.id = u.id)
  AND f.event_id = (SELECT n.event_id FROM queue n
                    WHERE n.callback_id = u.callback_id AND n.message_key = u.message_key AND n.event_id > u.event_id
                    ORDER BY n.event_id
                    LIMIT 1)

-- name: lock_callbacks
-- Current health of the callbacks a flush touches. NO KEY UPDATE: the deliveries being inserted for
-- them hold KEY SHARE locks (foreign keys), which FOR UPDATE would wait for and block.
SELECT id, account_id, name, url, status, consecutive_failures, failing_since, paused_until, disabled_reason
FROM callbacks WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE

-- name: set_health
-- Store the health the policy decided; a manual pause ('infinity', callbacks.set_paused) stays.
UPDATE callbacks c
SET status = u.status, consecutive_failures = u.failures, failing_since = u.since,
    paused_until = CASE WHEN c.paused_until = 'infinity' THEN c.paused_until ELSE coalesce(u.paused, '-infinity') END,
    disabled_reason = u.reason, updated_at = now()
FROM unnest($1::bigint[], $2::text[], $3::int[], $4::timestamptz[], $5::timestamptz[], $6::text[])
     AS u(id, status, failures, since, paused, reason)
WHERE c.id = u.id

-- name: take_token
-- A rate-limited callback's request may go now: take one token from its bucket (under the row's lock,
-- rechecked on its latest version) and answer 0, or answer the seconds until the next token comes. NULL:
-- the callback has no limit (any more). A token lost in a crash was never used: no need to wait for the
-- WAL flush.
WITH nosync AS (
    SELECT set_config('synchronous_commit', 'off', true)
),
bucket AS (
    SELECT rate_tokens(r, c.rate_per_second, c.rate_burst) AS tokens,
           c.rate_per_second * CASE WHEN r.slowed_until > now() THEN r.pace ELSE 1 END AS pace
    FROM callback_rates r JOIN callbacks c ON c.id = r.callback_id
    WHERE r.callback_id = $1 AND c.rate_per_second IS NOT NULL
),
took AS (
    UPDATE callback_rates r
    SET tokens = rate_tokens(r, c.rate_per_second, c.rate_burst) - 1, refilled_at = now()
    FROM nosync, callbacks c
    WHERE r.callback_id = $1 AND c.id = r.callback_id AND rate_tokens(r, c.rate_per_second, c.rate_burst) >= 1
    RETURNING 1
)
SELECT CASE WHEN EXISTS (SELECT FROM took) THEN 0 ELSE greatest((1 - tokens) / pace, 0.001) END FROM bucket

-- name: slow_down
-- A rate-limited receiver answered 429 without Retry-After: half its pace (at most 32 times slower) for $2
-- seconds from now, counted from its full rate when it was not slowed already, and an empty bucket.
UPDATE callback_rates r
SET pace = CASE WHEN r.slowed_until > now() THEN greatest(r.pace / 2, 1.0 / 32) ELSE 0.5 END,
    slowed_until = now() + make_interval(secs => $2), tokens = 0, refilled_at = now()
WHERE r.callback_id = ANY($1::bigint[])

-- name: release
-- Hand back what this worker holds but will not send (shutdown, or it could not be sent), due in $3 s.
UPDATE queue SET next_attempt_at = now() + make_interval(secs => $3), lease_owner = NULL, leased_until = '-infinity'
WHERE lease_owner = $1 AND id = ANY($2::bigint[])

-- name: live_secrets
-- The secrets a request is signed with, newest first (as stored: the format decides how each signs).
SELECT secret_enc FROM callback_secrets
WHERE callback_id = $1 AND (valid_until IS NULL OR valid_until > now())
ORDER BY id DESC

-- name: notify
-- Wake workers; delivered at commit, collapsed within a transaction.
SELECT pg_notify('dispatcher_deliveries', '')
