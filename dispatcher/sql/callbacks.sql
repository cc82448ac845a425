-- name: create_callback
-- A new callback waiting for its owner to prove control of the URL.
INSERT INTO callbacks (account_id, name, url, description, max_batch_size, verification_key_hash, verification_sent_at)
VALUES ($1, $2, $3, $4, $5, $6, now())
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

-- name: live_secrets
-- The secrets a request is signed with, newest first.
SELECT secret_enc FROM callback_secrets
WHERE callback_id = $1 AND (valid_until IS NULL OR valid_until > now())
ORDER BY id DESC

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
    consecutive_failures = CASE WHEN $8 = 'active' THEN 0 ELSE consecutive_failures END,
    failing_since = CASE WHEN $8 = 'active' THEN NULL ELSE failing_since END,
    paused_until = CASE WHEN $8 = 'active' THEN '-infinity' ELSE paused_until END,
    disabled_reason = CASE WHEN $8 = 'disabled' THEN 'disabled by request' WHEN $8 IS NOT NULL THEN NULL
                           ELSE disabled_reason END,
    verification_key_hash = coalesce($9, verification_key_hash),
    verification_sent_at = CASE WHEN $9 IS NULL THEN verification_sent_at ELSE now() END,
    updated_at = now()
WHERE id = $1 AND account_id = $2
RETURNING *

-- name: delete_callback
-- Deleting a callback deletes its subscriptions and delivery history.
DELETE FROM callbacks WHERE id = $1 AND account_id = $2 RETURNING id

-- name: new_verification
-- A fresh verification key.
UPDATE callbacks SET verification_key_hash = $3, verification_sent_at = now(), updated_at = now()
WHERE id = $1 AND account_id = $2 RETURNING *

-- name: mark_verified
-- The owner proved control: events flow from now on.
UPDATE callbacks SET status = 'active', verification_key_hash = NULL, updated_at = now()
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
