-- name: create_source
-- A new event source of an account.
INSERT INTO sources (account_id, name, provider, description, config, secrets_enc)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *

-- name: get_source
-- One source of an account.
SELECT * FROM sources WHERE id = $1 AND account_id = $2

-- name: source_for_ingest
-- The source a provider posts to (no account: the provider's own authentication decides).
SELECT * FROM sources WHERE id = $1

-- name: list_sources
-- An account's sources.
SELECT * FROM sources WHERE account_id = $1 ORDER BY id

-- name: update_source
-- PATCH: the given fields change ($4: whether description was given; config and secrets come whole).
UPDATE sources SET
    name = coalesce($3, name),
    description = CASE WHEN $4::boolean THEN $5 ELSE description END,
    config = coalesce($6, config),
    secrets_enc = CASE WHEN $7::boolean THEN $8 ELSE secrets_enc END,
    updated_at = now()
WHERE id = $1 AND account_id = $2
RETURNING *

-- name: delete_source
-- Remove a source; the events it recorded stay.
DELETE FROM sources WHERE id = $1 AND account_id = $2

-- name: keys_by_mail_message_id
-- The messageKeys of messages dispatcher sent, by the Message-ID they went out with.
SELECT mail_message_id, message_key FROM messages WHERE account_id = $1 AND mail_message_id = ANY($2::text[])

-- name: record_receipts
-- The raw provider event behind each recorded event (an event recorded before keeps its first receipt).
INSERT INTO source_receipts (event_id, account_id, source_id, raw)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::jsonb[])
ON CONFLICT DO NOTHING

-- name: receipt
-- The raw provider event behind an event of the account.
SELECT raw, received_at, source_id FROM source_receipts WHERE event_id = $1 AND account_id = $2

-- name: remember_nonce
-- A one-time value: a row when it is new, none when it was seen before (a replay).
INSERT INTO source_nonces (source_id, nonce) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING nonce

-- name: forget_nonce
-- The request carrying it was not recorded after all: let the provider's retry through.
DELETE FROM source_nonces WHERE source_id = $1 AND nonce = $2
