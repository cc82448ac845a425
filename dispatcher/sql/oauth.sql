-- name: live_key
-- The key an access token names, while it is not revoked.
SELECT id, account_id, scopes, allowed_cidrs FROM api_keys WHERE id = $1 AND account_id = $2 AND revoked_at IS NULL
