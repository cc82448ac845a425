-- 0006: bounces and complaints by mail. Each account chooses whether a hard bounce or a complaint
-- suppresses the address (on by default); a suppression names the event behind it and gets an id for
-- paging; mail the inbound listener could not read is kept for inspection (bounded); the Message-ID
-- index serves lookups without an account (a feedback report names only the original Message-ID).
-- Online for the new table and columns with defaults (no rewrite, except suppressions, which gains
-- an identity column: a rewrite of that table under an exclusive lock, about 1 s per million rows).
-- Version 5 processes keep working beside it: they never read the new columns. The Message-ID index
-- is rebuilt: about 1 s per million sent messages, writes to messages wait meanwhile.
ALTER TABLE accounts ADD COLUMN suppress_on_bounce boolean NOT NULL DEFAULT true;
ALTER TABLE suppressions
    ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY,
    ADD COLUMN event_id bigint;
CREATE UNIQUE INDEX suppressions_page ON suppressions (account_id, id);
CREATE TABLE unparsed_mail (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    mail_from    text NOT NULL,
    rcpt_tos     text[] NOT NULL,
    size         integer NOT NULL,
    reason       text NOT NULL,
    raw          bytea NOT NULL
);
DROP INDEX messages_mail_message_id;
CREATE INDEX messages_mail_message_id ON messages (mail_message_id) WHERE mail_message_id IS NOT NULL;
