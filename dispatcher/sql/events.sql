-- name: record_events
-- The one way to record events: insert a batch in input order, each event for its account (a client id
-- already stored for the account is skipped), write the queue rows and wake the workers (see fan_out)
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
-- queue rows for every active subscription that matches, `woke` wakes the workers at commit (if
-- anything was queued) and the console's live streams of the accounts that recorded events (one
-- NOTIFY per statement on dispatcher_live, naming up to 200 accounts; empty: any account).
-- Unverified callbacks get nothing; disabled ones accumulate pending rows until re-enabled.
-- '*' means every message event; operational events (callback.*) must be named explicitly.
ins AS (
    -- A client id already recorded for the account is skipped: today's by the day's unique index (ON
    -- CONFLICT), the 3 days before by the probe (partitions of older days are pruned): at least 72 hours,
    -- longer than providers retry a webhook (SendGrid: 72 hours). Each day more is one more index probe per event.
    INSERT INTO events (account_id, client_id, type, message_key, definition_key, recipient, occurred_at, data)
    SELECT account_id, client_id, type, message_key, definition_key, recipient, occurred_at, data
    FROM new_events n
    WHERE n.client_id IS NULL
       OR NOT EXISTS (SELECT 1 FROM events o
                      WHERE o.account_id = n.account_id AND o.client_id = n.client_id
                        AND o.recorded_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '3 days'
                        AND o.recorded_at < date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
    ORDER BY ord
    ON CONFLICT DO NOTHING
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
    -- An ordered callback's rows carry the messageKey (sql/queue.sql claims one per message at a time).
    -- One queued behind an earlier event of its message waits until that one is finished, which makes
    -- it due (queue.sql `release_next`), so claims do not walk it meanwhile: until the first one's next
    -- try, and 30 s at least. The KEY SHARE lock on that first row makes its finish (a DELETE) wait for
    -- this insert's commit, so the release that follows it sees this row. A row being finished already
    -- is skipped, not waited for (the next one in line, or none: due now; claims still keep the order),
    -- so recording never waits for a worker, and the two cannot deadlock over several messages.
    INSERT INTO queue (account_id, event_id, callback_id, created_at, message_key, next_attempt_at)
    SELECT DISTINCT e.account_id, e.id, s.callback_id, e.recorded_at,
           CASE WHEN c.ordering = 'messageKey' THEN e.message_key END,
           CASE WHEN c.ordering = 'messageKey'
                THEN coalesce((SELECT greatest(p.next_attempt_at, now() + interval '30 seconds') FROM queue p
                               WHERE p.callback_id = c.id AND p.message_key = e.message_key
                               ORDER BY p.event_id LIMIT 1 FOR KEY SHARE SKIP LOCKED), now())
                ELSE now() END
    FROM ins e
    JOIN subscriptions s ON s.account_id = e.account_id AND s.status = 'active'
    JOIN callbacks c ON c.id = s.callback_id AND c.status <> 'pending_verification'
    WHERE (s.event_types @> ARRAY[e.type] OR (s.event_types @> ARRAY['*'] AND e.type NOT LIKE 'callback.%'))
      -- A filter compiled to a path (filters.py) is matched against the event's fields and data; a row
      -- written by version 10 has none, and its filters keep their meaning: fields that data contains.
      AND (s.filters = '{}'::jsonb
           OR CASE WHEN s.filter_path IS NOT NULL
                   THEN jsonb_build_object(
                          'type', e.type, 'messageKey', e.message_key, 'definitionKey', e.definition_key,
                          'recipient', e.recipient, 'occurredAt', e.occurred_at, 'data', e.data) @@ s.filter_path
                   ELSE (e.data || jsonb_strip_nulls(jsonb_build_object(
                          'definitionKey', e.definition_key, 'messageKey', e.message_key, 'recipient', e.recipient)))
                        @> s.filters END)
    RETURNING 1
),
woke AS (
    SELECT pg_notify('dispatcher_deliveries', '') FROM (SELECT 1 FROM fan LIMIT 1) any_delivery
    UNION ALL
    SELECT pg_notify('dispatcher_live', CASE WHEN count(DISTINCT account_id) <= 200
                                             THEN string_agg(DISTINCT account_id::text, ',') ELSE '' END)
    FROM ins HAVING count(*) > 0
)

-- name: events_by_client_id
-- The stored events for client ids (idempotent replays answer with the original), within the days a
-- client id is remembered (fan_out).
SELECT id, client_id, type, message_key, definition_key, recipient, occurred_at, recorded_at, data
FROM events WHERE account_id = $1 AND client_id = ANY($2::text[])
  AND recorded_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '3 days'

-- name: notify_deliveries
-- Wake workers (the queue's own statement).
-- use: queue.notify

-- name: list_events
-- Keyset page, oldest first; every filter optional. A lower bound on occurred_at also skips the days
-- recorded more than a day before it (no event is accepted that far ahead: events.FUTURE_LIMIT).
SELECT id, client_id, type, message_key, definition_key, recipient, occurred_at, recorded_at, data
FROM events
WHERE account_id = $1
  AND id > $2
  AND ($3::text[] IS NULL OR type = ANY($3))
  AND ($4::text IS NULL OR message_key = $4)
  AND ($5::text IS NULL OR definition_key = $5)
  AND ($6::timestamptz IS NULL OR occurred_at >= $6)
  AND ($7::timestamptz IS NULL OR occurred_at < $7)
  AND recorded_at >= coalesce($6::timestamptz - interval '1 day', '-infinity')
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

-- name: record_test_event
-- A callback's test event: the event and one queue row for that callback only (no fan-out), workers woken
-- (and the account's live streams, as fan_out does).
WITH ins AS (
    INSERT INTO events (account_id, type, message_key, recipient, occurred_at, data)
    VALUES ($1, $3, $4, $5, now(), $6)
    RETURNING id, account_id, client_id, type, message_key, definition_key, recipient, occurred_at, recorded_at, data
),
fan AS (
    INSERT INTO queue (account_id, event_id, callback_id, created_at)
    SELECT account_id, id, $2, recorded_at FROM ins
    RETURNING id
),
woke AS (
    SELECT pg_notify('dispatcher_deliveries', '') FROM fan
    UNION ALL
    SELECT pg_notify('dispatcher_live', account_id::text) FROM ins
)
SELECT ins.*, fan.id AS delivery_id, (SELECT count(*) FROM woke) AS woke FROM ins, fan

-- name: search_events
-- The console's message search: newest first, before an id (keyset), every filter optional (a recipient is
-- compared case-insensitively, read from the rows: bound the days with $7). A lower bound on occurred_at
-- also skips the days recorded more than a day before it, as in list_events.
SELECT id, client_id, type, message_key, definition_key, recipient, occurred_at, recorded_at, data
FROM events
WHERE account_id = $1
  AND id < $2
  AND ($3::text[] IS NULL OR type = ANY($3))
  AND ($4::text IS NULL OR message_key = $4)
  AND ($5::text IS NULL OR definition_key = $5)
  AND ($6::text IS NULL OR lower(recipient) = lower($6))
  AND ($7::timestamptz IS NULL OR occurred_at >= $7)
  AND ($8::timestamptz IS NULL OR occurred_at < $8)
  AND recorded_at >= coalesce($7::timestamptz - interval '1 day', '-infinity')
ORDER BY id DESC
LIMIT $9
