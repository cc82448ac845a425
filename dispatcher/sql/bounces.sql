-- name: message_for_token
-- The message a verified VERP token names: the token's account must own it.
SELECT id, account_id, message_key, definition_key, recipient FROM messages WHERE id = $1 AND account_id = $2

-- name: message_for_mail_message_id
-- The message dispatcher sent with this Message-ID (random, so unique across accounts).
SELECT id, account_id, message_key, definition_key, recipient FROM messages WHERE mail_message_id = $1 LIMIT 1

-- name: keep_unparsed
-- Keep a mail the listener could not read, and only the newest $6 of them.
WITH kept AS (
    INSERT INTO unparsed_mail (mail_from, rcpt_tos, size, reason, raw) VALUES ($1, $2, $3, $4, $5) RETURNING id
)
DELETE FROM unparsed_mail WHERE id <= (SELECT id FROM kept) - $6

-- name: list_unparsed
-- The unreadable mails kept, newest first.
SELECT id, received_at, mail_from, rcpt_tos, size, reason FROM unparsed_mail ORDER BY id DESC LIMIT $1

-- name: get_unparsed
-- One kept mail with its raw bytes.
SELECT id, received_at, mail_from, rcpt_tos, size, reason, raw FROM unparsed_mail WHERE id = $1
