-- name: create_definition
-- A new send definition.
INSERT INTO definitions (account_id, definition_key, name, status, description, content, options)
VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *

-- name: definitions_created_recently
-- The rolling 7-day creation quota counts deleted definitions too.
SELECT count(*) FROM definitions WHERE account_id = $1 AND created_at > now() - interval '7 days'

-- name: get_definition
-- A live definition by key.
SELECT * FROM definitions WHERE account_id = $1 AND definition_key = $2 AND deleted_at IS NULL

-- name: definition_by_id
-- A live definition by its numeric id (Customer.io's transactional_message_id).
SELECT * FROM definitions WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL

-- name: list_definitions
-- An account's live definitions.
SELECT * FROM definitions WHERE account_id = $1 AND deleted_at IS NULL ORDER BY id

-- name: update_definition
-- PATCH a definition.
UPDATE definitions SET
    definition_key = coalesce($3, definition_key),
    name = coalesce($4, name),
    status = coalesce($5, status),
    description = CASE WHEN $6::boolean THEN $7 ELSE description END,
    content = coalesce($8, content),
    options = coalesce($9, options),
    updated_at = now()
WHERE account_id = $1 AND definition_key = $2 AND deleted_at IS NULL
RETURNING *

-- name: delete_definition
-- Soft delete.
UPDATE definitions SET deleted_at = now() WHERE account_id = $1 AND definition_key = $2 AND deleted_at IS NULL
RETURNING id

-- name: release_waiting
-- The definition was just activated: sends waiting for it are due now. Taking the lease back too
-- means a sender that is deciding "wait" for one of them right now cannot push it out again.
UPDATE messages SET next_attempt_at = now(), lease_owner = NULL
WHERE account_id = $1 AND definition_key = $2 AND status = 'queued'

-- name: accept_sends
-- Accept sends, each for its account, with their `queued` events (drafts get none) and wake the
-- senders -- one statement. An existing message key is left alone (the caller answers 409 for it).
WITH m AS (
    INSERT INTO messages (account_id, message_key, definition_key, status, request, recipient, next_attempt_at)
    SELECT t.account_id, t.message_key, t.definition_key, t.status, t.request, t.recipient, t.next_at
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::timestamptz[])
         WITH ORDINALITY AS t(account_id, definition_key, message_key, status, request, recipient, next_at, ord)
    ORDER BY t.ord
    ON CONFLICT (account_id, message_key) DO NOTHING
    RETURNING id, account_id, message_key, definition_key, recipient, status
),
new_events AS (
    SELECT account_id, NULL::text AS client_id, 'queued'::text AS type, message_key, definition_key, recipient,
           now() AS occurred_at, '{}'::jsonb AS data, id AS ord
    FROM m WHERE status IN ('queued', 'scheduled')
),
-- use: events.fan_out
, told AS (
    SELECT pg_notify('dispatcher_messages', '') FROM (SELECT 1 FROM m WHERE status = 'queued' LIMIT 1) any_due
)
SELECT account_id, message_key, status, (SELECT count(*) FROM woke) + (SELECT count(*) FROM told) AS woke FROM m

-- name: message_statuses
-- Existing messages by key (for 409 answers).
SELECT message_key, status FROM messages WHERE account_id = $1 AND message_key = ANY($2::text[])

-- name: get_message
-- One message of an account.
SELECT * FROM messages WHERE account_id = $1 AND message_key = $2

-- name: message_by_id
-- The message a tracking token points at.
SELECT id, account_id, message_key, definition_key, recipient FROM messages WHERE id = $1 AND account_id = $2

-- name: send_draft
-- A draft becomes queued.
UPDATE messages SET status = 'queued', next_attempt_at = now()
WHERE account_id = $1 AND message_key = $2 AND status = 'draft' RETURNING *

-- name: delete_draft
-- Discard a draft.
DELETE FROM messages WHERE account_id = $1 AND message_key = $2 AND status = 'draft' RETURNING id

-- name: notify_messages
-- Wake the senders at commit.
SELECT pg_notify('dispatcher_messages', '')

-- name: claim_messages
-- Due messages under a lease (next_attempt_at moves to the lease expiry).
UPDATE messages m SET next_attempt_at = now() + make_interval(secs => $3), lease_owner = $1,
                      status = 'queued'
FROM (SELECT id FROM messages
      WHERE status IN ('queued', 'scheduled') AND next_attempt_at <= now()
      ORDER BY next_attempt_at LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED) due
WHERE m.id = due.id
RETURNING m.*

-- name: definitions_by_key
-- Definitions the claimed messages need (deleted ones included, to fail them clearly).
SELECT * FROM definitions WHERE account_id = $1 AND definition_key = ANY($2::text[])
ORDER BY deleted_at NULLS FIRST

-- name: suppressed
-- Which of these (account, address) pairs are on a suppression list, and why.
SELECT s.account_id, s.address, s.reason FROM suppressions s
JOIN unnest($1::bigint[], $2::text[]) AS q(account_id, address) USING (account_id, address)

-- name: finish_messages
-- The outcomes of a claimed batch, for rows this sender still holds.
UPDATE messages m SET status = u.status, attempts = m.attempts + u.tried, lease_owner = NULL,
    next_attempt_at = CASE WHEN u.delay IS NULL THEN NULL ELSE now() + make_interval(secs => u.delay) END,
    rendered = coalesce(u.rendered, m.rendered),
    request = CASE WHEN u.redact THEN jsonb_build_object('redacted', true) ELSE m.request END,
    sent_at = CASE WHEN u.status = 'sent' THEN now() ELSE m.sent_at END,
    mail_message_id = coalesce(u.mail_message_id, m.mail_message_id)
FROM unnest($2::bigint[], $3::text[], $4::int[], $5::float8[], $6::jsonb[], $7::boolean[], $8::text[])
     AS u(id, status, tried, delay, rendered, redact, mail_message_id)
WHERE m.id = u.id AND m.lease_owner = $1

-- name: suppress
-- Add an address to the account's suppression list.
INSERT INTO suppressions (account_id, address, reason) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING

-- name: lock_definitions
-- Serialises an account's definition creations, so the weekly quota is counted exactly ($1: account id folded into an int).
SELECT pg_advisory_xact_lock(hashtext('dispatcher.definitions'), $1::int)

-- name: messages_waiting
-- An account's drafts or scheduled sends, the next due first (the console's Sends view).
SELECT message_key, definition_key, recipient, status, created_at, next_attempt_at
FROM messages WHERE account_id = $1 AND status = $2
ORDER BY next_attempt_at NULLS LAST, id LIMIT $3
