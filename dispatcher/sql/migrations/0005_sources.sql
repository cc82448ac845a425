-- 0005: event sources (provider webhooks in): the sources, the raw provider events kept for audit,
-- the replay guard for providers that sign a one-time token, and the Message-ID of each sent message
-- (which providers echo back, so their events find the message's messageKey).
-- Online: version 4 processes keep working beside it (they never read the new tables, and the new
-- column is nullable). Nothing is rewritten; the index on messages is built with a brief write lock
-- on messages: about 1 s per million messages.
CREATE TABLE sources (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    name         text NOT NULL,
    provider     text NOT NULL
                 CHECK (provider IN ('ses', 'sendgrid', 'mailgun', 'postmark', 'resend', 'sparkpost', 'brevo')),
    description  text,
    config       jsonb NOT NULL DEFAULT '{}',
    secrets_enc  bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, name)
);
CREATE TABLE source_receipts (
    event_id     bigint PRIMARY KEY REFERENCES events ON DELETE CASCADE,
    account_id   bigint NOT NULL,
    source_id    bigint NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    raw          jsonb NOT NULL
);
CREATE TABLE source_nonces (
    source_id    bigint NOT NULL REFERENCES sources ON DELETE CASCADE,
    nonce        text NOT NULL,
    seen_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, nonce)
);
CREATE INDEX source_nonces_seen ON source_nonces (seen_at);
ALTER TABLE messages ADD COLUMN mail_message_id text;
CREATE INDEX messages_mail_message_id ON messages (account_id, mail_message_id) WHERE mail_message_id IS NOT NULL;
