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

CREATE TABLE events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id      bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    client_id       text,
    type            text NOT NULL,
    message_key     text NOT NULL,
    definition_key  text,
    recipient       text,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    data            jsonb NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX events_client_id ON events (account_id, client_id) WHERE client_id IS NOT NULL;
CREATE INDEX events_account ON events (account_id, id);
CREATE INDEX events_message ON events (account_id, message_key, id);
CREATE INDEX events_type ON events (account_id, type, id);
CREATE INDEX events_definition ON events (account_id, definition_key, id) WHERE definition_key IS NOT NULL;
CREATE INDEX events_recorded ON events (recorded_at);

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
    UNIQUE (account_id, name)
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
    UNIQUE (account_id, name)
);
CREATE INDEX subscriptions_account ON subscriptions (account_id) WHERE status = 'active';

-- The outbox. A claimed row stays 'pending' with leased_until set to its lease expiry, so a crashed
-- worker's rows simply become due again.
-- A claim only sets the lease (leased_until, lease_owner), which no index covers, so PostgreSQL can
-- write it as a heap-only (HOT) update: no new index entries, given room on the row's own page.
-- Half of each page is kept free for that (fillfactor 50); indexes are then written twice per
-- delivery (insert, outcome), not three times. Every index on deliveries costs that: keep few.
CREATE TABLE deliveries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id       bigint NOT NULL,
    event_id         bigint NOT NULL REFERENCES events ON DELETE CASCADE,
    callback_id      bigint NOT NULL REFERENCES callbacks ON DELETE CASCADE,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    retry_base       integer NOT NULL DEFAULT 0,  -- attempts made before the last manual retry/recover
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    attempt_ids      bigint[] NOT NULL DEFAULT '{}',  -- this delivery's requests in the attempt log, in order
    leased_until     timestamptz NOT NULL DEFAULT '-infinity',
    UNIQUE (event_id, callback_id)
) WITH (fillfactor = 50);
-- Claims walk this per callback in claim order (id breaks ties, so no sort of the whole backlog):
-- it only holds pending rows, so finished history never slows it.
CREATE INDEX deliveries_claim ON deliveries (callback_id, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX deliveries_history ON deliveries (callback_id, id);

-- The attempt log: one row per HTTP request, which a batch's deliveries share. Each delivery lists its
-- attempts in order (deliveries.attempt_ids, appended by the same update that records the outcome),
-- so an outcome writes one row per request, not per event. Rows outlive nothing but their callback;
-- the retention purge drops old ones (ids left in attempt_ids then simply find nothing).
CREATE TABLE attempts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id    bigint NOT NULL,
    callback_id   bigint NOT NULL REFERENCES callbacks ON DELETE CASCADE,
    webhook_id    text,  -- the webhook-id header sent (NULL for attempts logged before version 2)
    events        integer NOT NULL,
    started_at    timestamptz NOT NULL,
    duration_ms   double precision NOT NULL,
    status_code   integer,
    error_kind    text,
    response_body text
);
CREATE INDEX attempts_callback ON attempts (callback_id, id);
CREATE INDEX attempts_started ON attempts (started_at);

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

-- The provider's raw event behind each event a source recorded, for audit; it goes with its event.
CREATE TABLE source_receipts (
    event_id     bigint PRIMARY KEY REFERENCES events ON DELETE CASCADE,
    account_id   bigint NOT NULL,
    source_id    bigint NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    raw          jsonb NOT NULL
);

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

INSERT INTO schema_version (version) VALUES (8);
