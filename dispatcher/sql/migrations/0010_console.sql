-- 0010: sessions of the browser console and of portal links (dispatcher/sessions.py). A session is a
-- random token, stored hashed, that reaches one account with the scopes of the key that signed in, or,
-- for a portal link, that account's chosen callbacks only.
-- Also the indexes the console's queries read by, and the rollups its longer charts read (empty until the
-- first retention round fills them; the charts read raw history meanwhile).
-- NOT online for a big history: the indexes on the partitioned history tables are built in the
-- migration's transaction, which blocks writes to them meanwhile (docs/operations.md); version 9
-- processes run unchanged beside the new table and indexes.
CREATE TABLE console_sessions (
    token_hash    bytea PRIMARY KEY,
    account_id    bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('console', 'portal')),
    key_id        bigint REFERENCES api_keys ON DELETE CASCADE,
    scopes        text[] NOT NULL,
    callback_ids  bigint[],
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    CHECK ((kind = 'console') = (key_id IS NOT NULL))
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- What the console reads: the overview's charts (an account's events and attempts in a time window,
-- index-only), a timeline's deliveries by their events, a recipient's events, an account's drafts
-- and scheduled sends.
CREATE INDEX events_recorded ON events (account_id, recorded_at) INCLUDE (type);
CREATE INDEX events_recipient ON events (account_id, lower(recipient), id) WHERE recipient IS NOT NULL;
CREATE INDEX attempts_started ON attempts (account_id, started_at) INCLUDE (events, status_code);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX queue_event ON queue (event_id);
CREATE INDEX messages_waiting ON messages (account_id, status, next_attempt_at) WHERE status IN ('draft', 'scheduled');

-- The console's charts over 24 hours and 7 days read these instead of the raw history: an account's events
-- per type and its deliveries succeeded/failed, counted per complete 10-minute slot by the retention round
-- (dispatcher/activity.py roll_up); activity_rolled says which slots they hold, [since, upto) (one row; the
-- charts read the slots outside it raw). Retention deletes old slots by activity_rollups_slot.
CREATE TABLE activity_rollups (
    account_id  bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('events', 'attempts')),
    slot        timestamptz NOT NULL,
    name        text NOT NULL,  -- the event type, or 'succeeded' / 'failed'
    n           bigint NOT NULL,
    PRIMARY KEY (account_id, kind, slot, name)
);
CREATE INDEX activity_rollups_slot ON activity_rollups (slot);
CREATE TABLE activity_rolled (
    one    boolean PRIMARY KEY DEFAULT true CHECK (one),
    since  timestamptz NOT NULL,
    upto   timestamptz NOT NULL
);
