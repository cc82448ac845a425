-- name: create_account
-- A new tenant.
INSERT INTO accounts (name) VALUES ($1) RETURNING id, name, created_at

-- name: get_account
-- A tenant by name.
SELECT id, name, created_at, suppress_on_bounce FROM accounts WHERE name = $1

-- name: list_accounts
-- Every tenant with its number of live keys.
SELECT a.id, a.name, a.created_at, a.suppress_on_bounce,
       (SELECT count(*) FROM api_keys k WHERE k.account_id = a.id AND k.revoked_at IS NULL) AS keys
FROM accounts a ORDER BY a.id

-- name: set_suppress_on_bounce
-- Whether a hard bounce or a complaint puts the recipient on the account's suppression list.
UPDATE accounts SET suppress_on_bounce = $2 WHERE name = $1 RETURNING id, name, created_at, suppress_on_bounce

-- name: any_account
-- Whether the database has been bootstrapped.
SELECT EXISTS (SELECT 1 FROM accounts)

-- name: create_key
-- Store only the hash of a new key.
INSERT INTO api_keys (account_id, key_hash, prefix, scopes, allowed_cidrs)
VALUES ($1, $2, $3, $4, $5) RETURNING id

-- name: list_keys
-- An account's keys (never the key itself).
SELECT id, prefix, scopes, allowed_cidrs, created_at, last_used_at, revoked_at
FROM api_keys WHERE account_id = $1 ORDER BY id

-- name: revoke_key
-- Revoking is immediate: every process's key cache hears the NOTIFY at commit and forgets the key.
WITH revoked AS (
    UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id, key_hash
)
SELECT id, pg_notify('dispatcher_keys', encode(key_hash, 'hex')) FROM revoked

-- name: authenticate
-- The live key with this hash.
SELECT k.id, k.account_id, k.scopes, k.allowed_cidrs
FROM api_keys k WHERE k.key_hash = $1 AND k.revoked_at IS NULL

-- name: touch_keys
-- Note that keys were used (to the minute: a busy key is not rewritten on every lookup).
UPDATE api_keys SET last_used_at = now()
WHERE id = ANY($1::bigint[]) AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')

-- name: lock_bootstrap
-- Serialises processes starting together on an empty database, so one of them creates the default account.
SELECT pg_advisory_xact_lock(hashtext('dispatcher.bootstrap'))

-- name: revoke_account_key
-- Revoke a key of this account only (the console); the key caches hear of it as above.
WITH revoked AS (
    UPDATE api_keys SET revoked_at = now()
    WHERE id = $2 AND account_id = $1 AND revoked_at IS NULL RETURNING id, key_hash
)
SELECT id, pg_notify('dispatcher_keys', encode(key_hash, 'hex')) FROM revoked
