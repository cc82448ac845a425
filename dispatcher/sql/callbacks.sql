-- name: create_callback
-- A new callback waiting for its owner to prove control of the URL.
INSERT INTO callbacks (account_id, name, url, description, max_batch_size, format)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *

-- name: add_secret
-- Store an encrypted signing secret.
INSERT INTO callback_secrets (callback_id, secret_enc) VALUES ($1, $2)

-- name: expire_secrets
-- Rotation: current secrets stay valid for the grace period, then stop being used.
UPDATE callback_secrets SET valid_until = now() + make_interval(secs => $2)
WHERE callback_id = $1 AND (valid_until IS NULL OR valid_until > now() + make_interval(secs => $2))

-- name: bump_secrets_version
-- Tell workers' secret caches that the set changed.
UPDATE callbacks SET secrets_version = secrets_version + 1, updated_at = now() WHERE id = $1

-- name: get_callback
-- One callback of an account.
SELECT * FROM callbacks WHERE id = $1 AND account_id = $2

-- name: list_callbacks
-- An account's callbacks.
SELECT * FROM callbacks WHERE account_id = $1 ORDER BY id

-- name: update_callback
-- PATCH: only the given fields change; re-enabling clears the failure bookkeeping.
UPDATE callbacks SET
    name = coalesce($3, name),
    url = coalesce($4, url),
    description = CASE WHEN $5::boolean THEN $6 ELSE description END,
    max_batch_size = coalesce($7, max_batch_size),
    status = coalesce($8, status),
    format = coalesce($9, format),
    consecutive_failures = CASE WHEN $8 = 'active' THEN 0 ELSE consecutive_failures END,
    failing_since = CASE WHEN $8 = 'active' THEN NULL ELSE failing_since END,
    paused_until = CASE WHEN $8 = 'active' AND paused_until <> 'infinity' THEN '-infinity' ELSE paused_until END,
    disabled_reason = CASE WHEN $8 = 'disabled' THEN 'disabled by request' WHEN $8 IS NOT NULL THEN NULL
                           ELSE disabled_reason END,
    updated_at = now()
WHERE id = $1 AND account_id = $2
RETURNING *

-- name: delete_callback
-- Deleting a callback deletes its subscriptions and delivery history.
DELETE FROM callbacks WHERE id = $1 AND account_id = $2 RETURNING id

-- name: start_handshake
-- A fresh verification key: the handshake starts over, its first request leased to the caller until $5 s.
UPDATE callbacks SET
    verification_key_hash = $3, verification_key_enc = $4, verification_sent_at = now(),
    verification_status = 'sent', verification_attempts = 0, verification_last_attempt_at = NULL,
    verification_status_code = NULL, verification_error = NULL,
    verification_next_at = now() + make_interval(secs => $5), updated_at = now()
WHERE id = $1 AND account_id = $2 RETURNING *

-- name: claim_handshakes
-- Due handshake retries, leased to the caller: one not answered before the lease ends is due again.
UPDATE callbacks SET verification_next_at = now() + make_interval(secs => $2)
WHERE id IN (SELECT id FROM callbacks WHERE verification_next_at <= now() ORDER BY verification_next_at
             LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, url, verification_key_enc, verification_attempts

-- name: record_handshake
-- A request's outcome, unless a newer key replaced the one it carried. No retry ($7 NULL) once delivered,
-- exhausted or verified: then the key is no longer kept.
UPDATE callbacks SET
    verification_status = $3,
    verification_attempts = verification_attempts + 1,
    verification_last_attempt_at = $4,
    verification_status_code = $5,
    verification_error = $6,
    verification_next_at = CASE WHEN $7::float8 IS NULL OR status <> 'pending_verification' THEN NULL
                                ELSE now() + make_interval(secs => $7) END,
    verification_key_enc = CASE WHEN $7::float8 IS NULL OR status <> 'pending_verification' THEN NULL
                                ELSE verification_key_enc END
WHERE id = $1 AND verification_key_hash = $2
RETURNING *

-- name: mark_verified
-- The owner proved control: events flow from now on, and the handshake needs no retry. (The key's hash
-- stays: the outcome of the request that carried it may still be on its way.)
UPDATE callbacks SET status = 'active', verification_next_at = NULL, verification_key_enc = NULL, updated_at = now()
WHERE id = $1 AND account_id = $2 AND status = 'pending_verification' RETURNING *

-- name: create_subscription
-- Subscribe a callback to event types; filter_path is the filter compiled (filters.py), NULL for none.
INSERT INTO subscriptions (account_id, callback_id, name, event_types, filters, status, filter_path)
VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonpath) RETURNING *

-- name: get_subscription
-- One subscription of an account.
SELECT * FROM subscriptions WHERE id = $1 AND account_id = $2

-- name: list_subscriptions
-- An account's subscriptions, optionally for one callback.
SELECT * FROM subscriptions WHERE account_id = $1 AND ($2::bigint IS NULL OR callback_id = $2) ORDER BY id

-- name: update_subscription
-- PATCH a subscription; new filters come with their compiled path ($7, NULL for {}).
UPDATE subscriptions SET
    name = coalesce($3, name),
    event_types = coalesce($4, event_types),
    filters = coalesce($5, filters),
    filter_path = CASE WHEN $5::jsonb IS NULL THEN filter_path ELSE $7::text::jsonpath END,
    status = coalesce($6, status),
    updated_at = now()
WHERE id = $1 AND account_id = $2 RETURNING *

-- name: delete_subscription
-- Remove a subscription.
DELETE FROM subscriptions WHERE id = $1 AND account_id = $2 RETURNING id

-- name: resume_deliveries
-- Deliveries that waited while their callback was disabled become due now, oldest first; of an ordered
-- callback's, each message's first (the others follow it in turn).
UPDATE queue d SET next_attempt_at = now()
WHERE callback_id = $1 AND next_attempt_at > now()
  AND (message_key IS NULL
       OR event_id = (SELECT p.event_id FROM queue p WHERE p.callback_id = d.callback_id AND p.message_key = d.message_key
                      ORDER BY p.event_id LIMIT 1))

-- name: notify_deliveries
-- Wake workers at commit.
-- use: events.notify_deliveries

-- name: pause_callback
-- A manual pause ('infinity'): no delivery is claimed for it until resumed; set_health keeps it.
UPDATE callbacks SET paused_until = 'infinity', updated_at = now() WHERE id = $1 AND account_id = $2 RETURNING *

-- name: resume_callback
-- End a manual pause: what waited is due at once. A finite pause (a failing callback's probe) is left alone.
UPDATE callbacks SET paused_until = '-infinity', updated_at = now()
WHERE id = $1 AND account_id = $2 AND paused_until = 'infinity' RETURNING *

-- name: set_signature
-- A callback's signature scheme (v1 | v1a); its keys change beside it (callbacks.switch_signature).
UPDATE callbacks SET signature = $2, updated_at = now() WHERE id = $1 RETURNING *

-- name: live_secrets_of
-- The live signing keys of these callbacks, newest first (their public keys are derived from them).
SELECT callback_id, secret_enc FROM callback_secrets
WHERE callback_id = ANY($1::bigint[]) AND (valid_until IS NULL OR valid_until > now())
ORDER BY id DESC

-- name: set_controls
-- A callback's ordering and rate limit ($3 requests per second, $4 burst; NULL: none). A limited callback
-- has a token bucket (full when new; a lower burst caps what is left), an unlimited one none.
WITH cb AS (
    UPDATE callbacks SET ordering = $2, rate_per_second = $3, rate_burst = $4, updated_at = now()
    WHERE id = $1 RETURNING *
),
bucket AS (
    INSERT INTO callback_rates (callback_id, tokens)
    SELECT id, rate_burst FROM cb WHERE rate_burst IS NOT NULL
    ON CONFLICT (callback_id) DO UPDATE SET tokens = least(callback_rates.tokens, excluded.tokens)
),
unlimited AS (
    DELETE FROM callback_rates WHERE callback_id = $1 AND $3::float8 IS NULL
)
SELECT * FROM cb

-- name: reorder_queue
-- After a change of ordering, the callback's queued deliveries carry their messageKey, or none; with none,
-- those never tried (held back behind an earlier event, not waiting for a retry of their own) are due now.
UPDATE queue SET message_key = ordered_key(callback_id, event_id, created_at),
                 next_attempt_at = CASE WHEN ordered_key(callback_id, event_id, created_at) IS NULL AND attempts = 0
                                        THEN least(next_attempt_at, now()) ELSE next_attempt_at END
WHERE callback_id = $1 AND message_key IS DISTINCT FROM ordered_key(callback_id, event_id, created_at)
