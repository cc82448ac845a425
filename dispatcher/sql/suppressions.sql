-- name: list_suppressions
-- Keyset page of an account's suppression list, oldest first; every filter optional. Addresses are stored
-- lower case, so the prefix is compared lower case too.
SELECT id, address, reason, event_id, created_at
FROM suppressions
WHERE account_id = $1
  AND id > $2
  AND ($3::text IS NULL OR reason = $3)
  AND ($4::text IS NULL OR starts_with(address, lower($4)))
  AND ($5::timestamptz IS NULL OR created_at >= $5)
  AND ($6::timestamptz IS NULL OR created_at < $6)
ORDER BY id
LIMIT $7

-- name: get_suppression
-- One suppressed address of an account (lookups are case-insensitive).
SELECT id, address, reason, event_id, created_at
FROM suppressions WHERE account_id = $1 AND address = lower($2)

-- name: delete_suppression
-- Take an address off the account's suppression list: later sends to it go out again.
DELETE FROM suppressions WHERE account_id = $1 AND address = lower($2) RETURNING id
