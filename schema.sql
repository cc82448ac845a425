-- dispatcher: the complete current schema. `dispatcher migrate` (and `serve`) apply it to an empty
-- database; an older one is upgraded instead by the ordered files in dispatcher/sql/migrations, which
-- reach the same catalog (tests/integration/test_migrations.py proves it). A change to this file
-- comes with the next migration file and a bump of SCHEMA_VERSION in dispatcher/db.py.

CREATE TABLE schema_version (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- Checksums of the schema.sql texts that releases before ordered migrations applied (they re-ran
-- the file whenever its text was new). Nothing reads it now; it stays so that every database of one
-- version has one catalog.
CREATE TABLE schema_applied (
    checksum    text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    suppress_on_bounce boolean NOT NULL DEFAULT true  -- a hard bounce or a complaint suppresses the address
);

-- API keys: only a SHA-256 of the (256-bit random) key is stored.
CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    key_hash     bytea NOT NULL UNIQUE,
    prefix       text NOT NULL,
    scopes       text[] NOT NULL,
    allowed_cidrs cidr[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_account ON api_keys (account_id);

-- History is partitioned by day (UTC): events by recorded_at, deliveries by created_at (their event's
-- recorded_at), attempts by started_at, source_receipts by received_at. dispatcher/partitions.py creates
-- each day's partitions ahead of need and retention drops whole days (DETACH ... CONCURRENTLY, then
-- DROP), never one whose events still have a delivery in the queue. They hold no foreign keys, either
-- way: a partition with one cannot be detached or dropped without locking the table it references
-- (accounts, callbacks) against every request, so a day goes without touching any other table. A
-- deleted callback's history stays until its days go. Primary keys carry the partition key, as
-- PostgreSQL requires; a client id is unique per day by an index each events partition gets
-- (history_partition, below), and the insert checks the days before (events.fan_out).
CREATE TABLE events (
    id              bigint GENERATED ALWAYS AS IDENTITY,
    account_id      bigint NOT NULL,
    client_id       text,
    type            text NOT NULL,
    message_key     text NOT NULL,
    definition_key  text,
    recipient       text,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    data            jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, recorded_at)
) PARTITION BY RANGE (recorded_at);
CREATE INDEX events_account ON events (account_id, id);
CREATE INDEX events_message ON events (account_id, message_key, id);
CREATE INDEX events_type ON events (account_id, type, id);
CREATE INDEX events_definition ON events (account_id, definition_key, id) WHERE definition_key IS NOT NULL;
CREATE INDEX events_recorded ON events (account_id, recorded_at) INCLUDE (type);  -- the console's charts
CREATE INDEX events_recipient ON events (account_id, lower(recipient), id) WHERE recipient IS NOT NULL;

-- Makes the day's partition of a history table unless it exists: a table like the parent, attached
-- (ATTACH takes a SHARE UPDATE EXCLUSIVE lock on the parent, so inserts go on meanwhile, where CREATE
-- TABLE ... PARTITION OF would block them), and for events the day's unique index on client ids.
-- dispatcher/partitions.py calls it for today and the days ahead.
CREATE FUNCTION history_partition(parent regclass, day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('%s_%s', parent, to_char(day, 'YYYYMMDD'));
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part, parent);
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, part,
                   day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
    IF parent = 'events'::regclass THEN
        EXECUTE format('CREATE UNIQUE INDEX %I ON %I (account_id, client_id) WHERE client_id IS NOT NULL',
                       part || '_client_id', part);
    END IF;
    RETURN true;
END
$$;

-- Callbacks: status pending_verification -> active <-> failing -> disabled.
CREATE TABLE callbacks (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id           bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    name                 text NOT NULL,
    url                  text NOT NULL,
    description          text,
    max_batch_size       integer NOT NULL DEFAULT 1 CHECK (max_batch_size BETWEEN 1 AND 1000),
    status               text NOT NULL DEFAULT 'pending_verification'
                         CHECK (status IN ('pending_verification', 'active', 'failing', 'disabled')),
    verification_key_hash bytea,
    verification_sent_at timestamptz,
    secrets_version      integer NOT NULL DEFAULT 1,
    consecutive_failures integer NOT NULL DEFAULT 0,
    failing_since        timestamptz,
    paused_until         timestamptz NOT NULL DEFAULT '-infinity',
    disabled_reason      text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    -- The ownership handshake: the outcome of the latest verification request (sent, then delivered
    -- or failed), and when a retry is due. verification_next_at is also the lease of a request in
    -- flight: one never answered is due again when it ends, in whichever process claims it. The key
    -- is kept (encrypted, like signing secrets) only while a retry may still need it.
    verification_key_enc bytea,
    verification_status  text CHECK (verification_status IN ('sent', 'delivered', 'failed')),
    verification_attempts integer NOT NULL DEFAULT 0,
    verification_last_attempt_at timestamptz,
    verification_status_code integer,
    verification_error   text,
    verification_next_at timestamptz,
    -- The payload format and signature scheme (dispatcher/delivery/formats.py).
    format               text NOT NULL DEFAULT 'standard' CHECK (format IN ('standard', 'ens', 'customerio')),
    -- The signature scheme: v1 (HMAC-SHA256 with the secret) or v1a (ed25519; the secret is the private key).
    signature            text NOT NULL DEFAULT 'v1' CHECK (signature IN ('v1', 'v1a')),
    -- Delivery controls: per-message ordering, and a rate limit shared by every worker (callback_rates).
    ordering             text NOT NULL DEFAULT 'none' CHECK (ordering IN ('none', 'messageKey')),
    rate_per_second      float8 CHECK (rate_per_second > 0 AND rate_per_second <= 1000),
    rate_burst           integer CHECK (rate_burst BETWEEN 1 AND 10000),
    UNIQUE (account_id, name),
    CHECK ((rate_per_second IS NULL) = (rate_burst IS NULL))
);
CREATE INDEX callbacks_claimable ON callbacks (paused_until) WHERE status IN ('active', 'failing');
CREATE INDEX callbacks_handshake_due ON callbacks (verification_next_at) WHERE verification_next_at IS NOT NULL;

-- Signing secrets, encrypted at rest (Fernet). Rotation adds a row and gives the old one an expiry.
CREATE TABLE callback_secrets (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    callback_id  bigint NOT NULL REFERENCES callbacks ON DELETE CASCADE,
    secret_enc   bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    valid_until  timestamptz
);
CREATE INDEX callback_secrets_callback ON callback_secrets (callback_id);

-- A rate-limited callback's token bucket, shared by every worker process: each request takes a token as it
-- goes (sql/queue.sql take_token). A 429 without Retry-After sets `pace` below 1 until slowed_until.
-- The row exists while the callback has a rate limit (callbacks.set_controls).
CREATE TABLE callback_rates (
    callback_id  bigint PRIMARY KEY REFERENCES callbacks ON DELETE CASCADE,
    tokens       float8 NOT NULL,
    refilled_at  timestamptz NOT NULL DEFAULT now(),
    pace         float8 NOT NULL DEFAULT 1 CHECK (pace > 0 AND pace <= 1),
    slowed_until timestamptz NOT NULL DEFAULT '-infinity'
);

-- The tokens a bucket holds now: what it held, refilled at the callback's rate (times its pace while
-- slowed), never above the burst.
CREATE FUNCTION rate_tokens(r callback_rates, per_second float8, burst integer) RETURNS float8
LANGUAGE sql STABLE AS $$
    SELECT least(burst::float8, r.tokens + extract(epoch FROM now() - r.refilled_at)::float8 * per_second
                                           * CASE WHEN r.slowed_until > now() THEN r.pace ELSE 1 END)
$$;

CREATE TABLE subscriptions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    callback_id  bigint NOT NULL REFERENCES callbacks ON DELETE CASCADE,
    name         text NOT NULL,
    event_types  text[] NOT NULL,
    filters      jsonb NOT NULL DEFAULT '{}',
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    filter_path  jsonpath,  -- `filters` compiled (dispatcher/filters.py); NULL: match on `filters` by containment
    UNIQUE (account_id, name)
);
CREATE INDEX subscriptions_account ON subscriptions (account_id) WHERE status = 'active';

-- The queue: deliveries not yet finished, and nothing else. Fan-out inserts a row; a final outcome
-- (succeeded, or failed for good) moves it into `deliveries`, with its id. A claimed row stays here
-- with leased_until set to its lease expiry, so a crashed worker's rows simply become due again.
-- A claim only sets the lease (leased_until, lease_owner), which no index covers, so PostgreSQL can
-- write it as a heap-only (HOT) update: no new index entries, given room on the row's own page.
-- Half of each page is kept free for that (fillfactor 50). Every index here costs each delivery an
-- insert and a delete: keep few. created_at is its event's recorded_at: the day retention keeps.
CREATE TABLE queue (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- the delivery's id, for good
    account_id       bigint NOT NULL,
    event_id         bigint NOT NULL,
    callback_id      bigint NOT NULL REFERENCES callbacks ON DELETE CASCADE,
    created_at       timestamptz NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    retry_base       integer NOT NULL DEFAULT 0,  -- attempts made before the last manual retry/recover
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    leased_until     timestamptz NOT NULL DEFAULT '-infinity',
    lease_owner      text,
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    attempt_ids      bigint[] NOT NULL DEFAULT '{}',  -- this delivery's requests in the attempt log, in order
    message_key      text  -- set only for a callback with ordering 'messageKey': its event's messageKey
) WITH (fillfactor = 50);
-- Claims walk this per callback in claim order (id breaks ties, so no sort of the whole backlog).
CREATE INDEX queue_claim ON queue (callback_id, next_attempt_at, id);
CREATE INDEX queue_event ON queue (event_id);
-- Ordered callbacks: a row is claimable only when no earlier event of its message waits for the callback.
CREATE INDEX queue_ordered ON queue (callback_id, message_key, event_id) WHERE message_key IS NOT NULL;

-- The message_key a queue row of this callback carries for this event: its messageKey when the callback
-- delivers in order per message, else NULL (re-queueing: sql/deliveries.sql).
CREATE FUNCTION ordered_key(callback bigint, event bigint, recorded timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT e.message_key FROM events e, callbacks c
    WHERE c.id = callback AND c.ordering = 'messageKey' AND e.id = event AND e.recorded_at = recorded
$$;

-- Finished deliveries, written once by the outcome that finished them (a retry moves one back to the
-- queue). Partitioned by created_at, like its event.
CREATE TABLE deliveries (
    id               bigint NOT NULL,
    account_id       bigint NOT NULL,
    event_id         bigint NOT NULL,
    callback_id      bigint NOT NULL,
    status           text NOT NULL CHECK (status IN ('succeeded', 'failed')),
    attempts         integer NOT NULL,
    retry_base       integer NOT NULL,
    created_at       timestamptz NOT NULL,
    finished_at      timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    attempt_ids      bigint[] NOT NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX deliveries_history ON deliveries (callback_id, id);
CREATE INDEX deliveries_event ON deliveries (event_id);

-- The attempt log: one row per HTTP request, which a batch's deliveries share. Each delivery lists its
-- attempts in order (attempt_ids, appended by the statement that records the outcome), so an outcome
-- writes one row per request, not per event. Retention drops whole days of it (ids left in
-- attempt_ids then simply find nothing).
CREATE TABLE attempts (
    id            bigint GENERATED ALWAYS AS IDENTITY,
    account_id    bigint NOT NULL,
    callback_id   bigint NOT NULL,
    webhook_id    text,  -- the webhook-id header sent (NULL for attempts logged before version 2)
    events        integer NOT NULL,
    started_at    timestamptz NOT NULL,
    duration_ms   double precision NOT NULL,
    status_code   integer,
    error_kind    text,
    response_body text,
    PRIMARY KEY (id, started_at)
) PARTITION BY RANGE (started_at);
CREATE INDEX attempts_callback ON attempts (callback_id, id);
CREATE INDEX attempts_started ON attempts (account_id, started_at) INCLUDE (events, status_code);  -- the console's charts

CREATE TABLE definitions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id      bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    definition_key  text NOT NULL,
    name            text NOT NULL,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
    description     text,
    content         jsonb NOT NULL DEFAULT '{}',
    options         jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz  -- soft delete: the weekly creation quota still counts it
);
CREATE UNIQUE INDEX definitions_key ON definitions (account_id, definition_key) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX definitions_name ON definitions (account_id, name) WHERE deleted_at IS NULL;
CREATE INDEX definitions_created ON definitions (account_id, created_at);

-- Messages: draft | scheduled | queued -> sent | failed (deferred retries stay queued).
CREATE TABLE messages (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id      bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    message_key     text NOT NULL,
    definition_key  text,
    status          text NOT NULL CHECK (status IN ('draft', 'scheduled', 'queued', 'sent', 'failed', 'bounced')),
    request         jsonb NOT NULL,
    recipient       text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    lease_owner     text,
    rendered        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    mail_message_id text,  -- the Message-ID header it went out with; providers echo it in their events
    UNIQUE (account_id, message_key)
);
CREATE INDEX messages_due ON messages (next_attempt_at) WHERE status IN ('queued', 'scheduled');
CREATE INDEX messages_definition ON messages (account_id, definition_key) WHERE status = 'queued';
CREATE INDEX messages_mail_message_id ON messages (mail_message_id) WHERE mail_message_id IS NOT NULL;
CREATE INDEX messages_waiting ON messages (account_id, status, next_attempt_at) WHERE status IN ('draft', 'scheduled');

-- An account's suppressed addresses (lower case): later sends to them fail unless sendToUnsubscribed.
CREATE TABLE suppressions (
    account_id  bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    address     text NOT NULL,
    reason      text NOT NULL,  -- unsubscribed | bounced | complained
    created_at  timestamptz NOT NULL DEFAULT now(),
    id          bigint GENERATED ALWAYS AS IDENTITY,  -- the order of paging
    event_id    bigint,  -- the event that suppressed it (kept after the event is purged)
    PRIMARY KEY (account_id, address)
);
CREATE UNIQUE INDEX suppressions_page ON suppressions (account_id, id);

-- Event sources: a provider's webhooks in (POST /in/{sourceId}). Secret config fields are encrypted
-- at rest (Fernet) in secrets_enc; config holds the rest.
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

-- The provider's raw event behind each event a source recorded, for audit; it goes with its event's day.
CREATE TABLE source_receipts (
    event_id     bigint NOT NULL,
    account_id   bigint NOT NULL,
    source_id    bigint NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),  -- its event's recorded_at
    raw          jsonb NOT NULL,
    PRIMARY KEY (event_id, received_at)
) PARTITION BY RANGE (received_at);

-- One-time values a provider signs (Mailgun's token), remembered for twice the timestamp tolerance.
CREATE TABLE source_nonces (
    source_id    bigint NOT NULL REFERENCES sources ON DELETE CASCADE,
    nonce        text NOT NULL,
    seen_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, nonce)
);
CREATE INDEX source_nonces_seen ON source_nonces (seen_at);

-- Mail the inbound SMTP listener could not read as a bounce or a complaint, kept for inspection
-- (`dispatcher bounces unparsed`); only the newest DISPATCHER_INBOUND_KEEP are kept.
CREATE TABLE unparsed_mail (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    mail_from    text NOT NULL,
    rcpt_tos     text[] NOT NULL,
    size         integer NOT NULL,
    reason       text NOT NULL,
    raw          bytea NOT NULL
);

-- Marketing Cloud compatibility (0008): Content Builder assets and definitions' extra fields.
CREATE TABLE mc_assets (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id    bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    customer_key  text NOT NULL,
    name          text NOT NULL,
    asset_type    jsonb NOT NULL,
    views         jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    modified_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX mc_assets_key ON mc_assets (account_id, customer_key);
CREATE TABLE mc_definitions (
    definition_id   bigint PRIMARY KEY REFERENCES definitions ON DELETE CASCADE,
    asset_key       text NOT NULL,
    subscriptions   jsonb NOT NULL DEFAULT '{}',
    classification  text
);

-- Sessions of the browser console and of portal links (dispatcher/sessions.py): a random token,
-- stored hashed; a console session has the scopes of the key that signed in, a portal link reaches
-- the account's chosen callbacks only (callback_ids; NULL: all of them).
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

INSERT INTO schema_version (version) VALUES (12);
