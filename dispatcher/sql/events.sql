-- name: record_events
-- The one way to record events: insert a batch in input order, each event for its account (a client id
-- already stored for the account is skipped), write the outbox rows and wake the workers (see fan_out)
-- -- one statement, one round trip.
WITH new_events AS (
    SELECT t.*
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
                $8::jsonb[])
         WITH ORDINALITY AS t(account_id, client_id, type, message_key, definition_key, recipient, occurred_at, data,
                              ord)
),
-- use: events.fan_out
SELECT id, account_id, client_id, type, message_key, definition_key, recipient, occurred_at, recorded_at, data,
       (SELECT count(*) FROM woke) AS woke
FROM ins

-- name: fan_out
-- CTEs shared by every statement that records events; the statement provides `new_events`
-- (account_id, client_id, type, message_key, definition_key, recipient, occurred_at, data, ord)
-- and must read `woke` so the NOTIFY runs. `ins` inserts them in `ord` order, `suppressed` adds
-- hard-bounced and complaining recipients to the account's suppression list, `fan` writes the
-- outbox rows for every active subscription that matches, `woke` wakes the workers at commit.
-- Unverified callbacks get nothing; disabled ones accumulate pending rows until re-enabled.
-- '*' means every message event; operational events (callback.*) must be named explicitly.
ins AS (
    INSERT INTO events (account_id, client_id, type, message_key, definition_key, recipient, occurred_at, data)
    SELECT account_id, client_id, type, message_key, definition_key, recipient, occurred_at, data
    FROM new_events
    ORDER BY ord
    ON CONFLICT (account_id, client_id) WHERE client_id IS NOT NULL DO NOTHING
    RETURNING id, account_id, client_id, type, message_key, definition_key, recipient, occurred_at, recorded_at, data
),
suppressed AS (
    -- A hard bounce or a complaint suppresses the recipient for the account's own sends, unless the
    -- account chose otherwise (accounts.suppress_on_bounce).
    INSERT INTO suppressions (account_id, address, reason, event_id)
    SELECT e.account_id, lower(e.recipient), e.type, e.id
    FROM ins e
    WHERE e.recipient IS NOT NULL
      AND (e.type = 'complained' OR (e.type = 'bounced' AND e.data ->> 'bounceType' = 'hard'))
      AND (SELECT a.suppress_on_bounce FROM accounts a WHERE a.id = e.account_id)
    ON CONFLICT (account_id, address) DO NOTHING
),
fan AS (
    INSERT INTO deliveries (account_id, event_id, callback_id)
    SELECT DISTINCT e.account_id, e.id, s.callback_id
    FROM ins e
    JOIN subscriptions s ON s.account_id = e.account_id AND s.status = 'active'
    JOIN callbacks c ON c.id = s.callback_id AND c.status <> 'pending_verification'
    WHERE (s.event_types @> ARRAY[e.type] OR (s.event_types @> ARRAY['*'] AND e.type NOT LIKE 'callback.%'))
      AND (s.filters = '{}'::jsonb
           OR (e.data || jsonb_strip_nulls(jsonb_build_object(
                 'definitionKey', e.definition_key, 'messageKey', e.message_key, 'recipient', e.recipient)))
              @> s.filters)
    ON CONFLICT (event_id, callback_id) DO NOTHING
    RETURNING 1
),
woke AS (
    SELECT pg_notify('dispatcher_deliveries', '') FROM (SELECT 1 FROM fan LIMIT 1) any_delivery
)

-- name: events_by_client_id
-- The stored events for client ids (idempotent replays answer with the original).
SELECT id, client_id, type, message_key, definition_key, recipient, occurred_at, recorded_at, data
FROM events WHERE account_id = $1 AND client_id = ANY($2::text[])

-- name: notify_deliveries
-- Wake workers (the queue's own statement).
-- use: queue.notify

-- name: list_events
-- Keyset page, oldest first; every filter optional.
SELECT id, client_id, type, message_key, definition_key, recipient, occurred_at, recorded_at, data
FROM events
WHERE account_id = $1
  AND id > $2
  AND ($3::text[] IS NULL OR type = ANY($3))
  AND ($4::text IS NULL OR message_key = $4)
  AND ($5::text IS NULL OR definition_key = $5)
  AND ($6::timestamptz IS NULL OR occurred_at >= $6)
  AND ($7::timestamptz IS NULL OR occurred_at < $7)
ORDER BY id
LIMIT $8

-- name: message_events
-- A message's timeline, oldest first.
SELECT id, client_id, type, message_key, definition_key, recipient, occurred_at, recorded_at, data
FROM events WHERE account_id = $1 AND message_key = $2
ORDER BY occurred_at, id

-- name: latest_events
-- The newest events, newest first, of one account or all ($1 NULL); for `dispatcher events tail`.
SELECT e.id, a.name AS account, e.type, e.message_key, e.recipient, e.occurred_at, e.data
FROM events e JOIN accounts a ON a.id = e.account_id
WHERE ($1::bigint IS NULL OR e.account_id = $1)
  AND ($2::text[] IS NULL OR e.type = ANY($2))
  AND ($3::text IS NULL OR e.message_key = $3)
ORDER BY e.id DESC
LIMIT $4

-- name: events_after
-- Events after an id, oldest first, of one account or all ($2 NULL); for `dispatcher events tail --follow`.
SELECT e.id, a.name AS account, e.type, e.message_key, e.recipient, e.occurred_at, e.data
FROM events e JOIN accounts a ON a.id = e.account_id
WHERE e.id > $1
  AND ($2::bigint IS NULL OR e.account_id = $2)
  AND ($3::text[] IS NULL OR e.type = ANY($3))
  AND ($4::text IS NULL OR e.message_key = $4)
ORDER BY e.id
LIMIT $5

-- name: last_event_id
-- The newest event id (0 when none): where `dispatcher events tail --follow` starts.
SELECT coalesce(max(id), 0) FROM events
