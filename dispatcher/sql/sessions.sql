-- name: create_session
-- A new console session or portal link; only the token's hash is stored.
INSERT INTO console_sessions (token_hash, account_id, kind, key_id, scopes, callback_ids, csrf_token, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now() + $8::interval)
RETURNING expires_at

-- name: resume_session
-- The live session with this token, marked as seen: not past its expiry nor idle longer than $2, and,
-- for a console session, its key not revoked since it signed in.
UPDATE console_sessions s SET last_seen_at = now()
WHERE s.token_hash = $1 AND s.kind = $3 AND s.expires_at > now() AND s.last_seen_at > now() - $2::interval
  AND (s.key_id IS NULL OR EXISTS (SELECT 1 FROM api_keys k WHERE k.id = s.key_id AND k.revoked_at IS NULL))
RETURNING s.token_hash, s.account_id, s.kind, s.key_id, s.scopes, s.callback_ids, s.csrf_token, s.expires_at

-- name: end_session
-- Sign-out: the token is forgotten at once.
DELETE FROM console_sessions WHERE token_hash = $1

-- name: add_callback
-- A callback created through a portal link joins that link's scope.
UPDATE console_sessions SET callback_ids = array_append(callback_ids, $2::bigint)
WHERE token_hash = $1 AND callback_ids IS NOT NULL

-- name: purge_sessions
-- Sessions past their expiry or idle longer than $1 (run by the purger).
DELETE FROM console_sessions WHERE expires_at <= now() OR last_seen_at <= now() - $1::interval

-- name: owned_callbacks
-- Which of these callback ids belong to the account (a portal link may name only its own).
SELECT id FROM callbacks WHERE account_id = $1 AND id = ANY($2::bigint[])
