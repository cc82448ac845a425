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
    paused_until = CASE WHEN $8 = 'active' THEN '-infinity' ELSE paused_until END,
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
-- Subscribe a callback to event types.
INSERT INTO subscriptions (account_id, callback_id, name, event_types, filters, status)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING *

-- name: get_subscription
-- One subscription of an account.
SELECT * FROM subscriptions WHERE id = $1 AND account_id = $2

-- name: list_subscriptions
-- An account's subscriptions, optionally for one callback.
SELECT * FROM subscriptions WHERE account_id = $1 AND ($2::bigint IS NULL OR callback_id = $2) ORDER BY id

-- name: update_subscription
-- PATCH a subscription.
UPDATE subscriptions SET
    name = coalesce($3, name),
    event_types = coalesce($4, event_types),
    filters = coalesce($5, filters),
    status = coalesce($6, status),
    updated_at = now()
WHERE id = $1 AND account_id = $2 RETURNING *

-- name: delete_subscription
-- Remove a subscription.
DELETE FROM subscriptions WHERE id = $1 AND account_id = $2 RETURNING id

-- name: resume_deliveries
-- Deliveries that waited while their callback was disabled become due now, oldest first.
UPDATE deliveries SET next_attempt_at = now()
WHERE callback_id = $1 AND status = 'pending' AND next_attempt_at > now()

-- name: notify_deliveries
-- Wake workers at commit.
-- use: events.notify_deliveries
