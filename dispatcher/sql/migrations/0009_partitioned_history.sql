-- 0009: history partitioned by day and the queue apart from it. events, attempts and source_receipts
-- become tables partitioned by day (UTC); deliveries splits into `queue` (unfinished deliveries) and
-- `deliveries` (finished ones, partitioned by day). Foreign keys to events go (a day is dropped whole).
-- NOT online: the old tables are copied into the new ones in this migration's transaction, so
-- writes wait until it commits, and version 8 processes must be stopped first (they use the old
-- tables). Measured (`python -m bench upgrade`, embedded PostgreSQL 18, 2 cores): 27 s per million
-- events with one delivery and one attempt each (54 s with the cores shared); the database needs room
-- for a second copy of its history, and as much WAL, while it runs. Operator steps: docs/operations.md,
-- "Upgrading to version 9". A finished delivery's created_at becomes its event's recorded_at (they were
-- equal to within a transaction's clock).
ALTER TABLE events RENAME TO events_v8;
ALTER TABLE events_v8 RENAME CONSTRAINT events_pkey TO events_v8_pkey;
ALTER SEQUENCE events_id_seq RENAME TO events_v8_id_seq;
ALTER TABLE deliveries RENAME TO deliveries_v8;
ALTER TABLE deliveries_v8 RENAME CONSTRAINT deliveries_pkey TO deliveries_v8_pkey;
ALTER SEQUENCE deliveries_id_seq RENAME TO deliveries_v8_id_seq;
ALTER TABLE attempts RENAME TO attempts_v8;
ALTER TABLE attempts_v8 RENAME CONSTRAINT attempts_pkey TO attempts_v8_pkey;
ALTER SEQUENCE attempts_id_seq RENAME TO attempts_v8_id_seq;
ALTER TABLE source_receipts RENAME TO source_receipts_v8;
ALTER TABLE source_receipts_v8 RENAME CONSTRAINT source_receipts_pkey TO source_receipts_v8_pkey;
ALTER INDEX events_client_id RENAME TO events_v8_client_id;
ALTER INDEX events_account RENAME TO events_v8_account;
ALTER INDEX events_message RENAME TO events_v8_message;
ALTER INDEX events_type RENAME TO events_v8_type;
ALTER INDEX events_definition RENAME TO events_v8_definition;
ALTER INDEX deliveries_history RENAME TO deliveries_v8_history;
ALTER INDEX attempts_callback RENAME TO attempts_v8_callback;
-- The new tables' constraints take the old tables' names (foreign keys, checks and, on PostgreSQL 18,
-- NOT NULL constraints): left on the old tables, the new ones would be named with a suffix.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT conrelid::regclass AS rel, conname FROM pg_constraint
             WHERE conrelid = ANY ('{events_v8,deliveries_v8,attempts_v8,source_receipts_v8}'::regclass[])
               AND conname NOT LIKE '%\_v8\_pkey'
    LOOP
        EXECUTE format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I', c.rel, c.conname, c.conname || '_v8');
    END LOOP;
END
$$;

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
    attempt_ids      bigint[] NOT NULL DEFAULT '{}'  -- this delivery's requests in the attempt log, in order
) WITH (fillfactor = 50);
-- Claims walk this per callback in claim order (id breaks ties, so no sort of the whole backlog).
CREATE INDEX queue_claim ON queue (callback_id, next_attempt_at, id);

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

CREATE TABLE source_receipts (
    event_id     bigint NOT NULL,
    account_id   bigint NOT NULL,
    source_id    bigint NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),  -- its event's recorded_at
    raw          jsonb NOT NULL,
    PRIMARY KEY (event_id, received_at)
) PARTITION BY RANGE (received_at);

-- The days the old tables hold, and today with the days ahead that `serve` would make.
SELECT history_partition(t, d::date)
FROM (SELECT date_trunc('day', recorded_at AT TIME ZONE 'UTC') AS d FROM events_v8
      UNION SELECT date_trunc('day', started_at AT TIME ZONE 'UTC') FROM attempts_v8
      UNION SELECT generate_series(date_trunc('day', now() AT TIME ZONE 'UTC'),
                                   date_trunc('day', now() AT TIME ZONE 'UTC') + interval '3 days', interval '1 day')) days
CROSS JOIN unnest('{events,deliveries,attempts,source_receipts}'::regclass[]) AS t;

INSERT INTO events (id, account_id, client_id, type, message_key, definition_key, recipient, occurred_at, recorded_at,
                    data)
OVERRIDING SYSTEM VALUE
SELECT id, account_id, client_id, type, message_key, definition_key, recipient, occurred_at, recorded_at, data
FROM events_v8;
SELECT setval(pg_get_serial_sequence('events', 'id'), (SELECT last_value FROM events_v8_id_seq),
              (SELECT is_called FROM events_v8_id_seq));

INSERT INTO queue (id, account_id, event_id, callback_id, created_at, attempts, retry_base, next_attempt_at,
                   leased_until, lease_owner, last_attempt_at, last_status_code, last_error, attempt_ids)
OVERRIDING SYSTEM VALUE
SELECT d.id, d.account_id, d.event_id, d.callback_id, e.recorded_at, d.attempts, d.retry_base, d.next_attempt_at,
       d.leased_until, d.lease_owner, d.last_attempt_at, d.last_status_code, d.last_error, d.attempt_ids
FROM deliveries_v8 d JOIN events_v8 e ON e.id = d.event_id
WHERE d.status = 'pending';
INSERT INTO deliveries (id, account_id, event_id, callback_id, status, attempts, retry_base, created_at, finished_at,
                        last_attempt_at, last_status_code, last_error, attempt_ids)
SELECT d.id, d.account_id, d.event_id, d.callback_id, d.status, d.attempts, d.retry_base, e.recorded_at,
       coalesce(d.last_attempt_at, d.created_at), d.last_attempt_at, d.last_status_code, d.last_error, d.attempt_ids
FROM deliveries_v8 d JOIN events_v8 e ON e.id = d.event_id
WHERE d.status <> 'pending';
SELECT setval(pg_get_serial_sequence('queue', 'id'), (SELECT last_value FROM deliveries_v8_id_seq),
              (SELECT is_called FROM deliveries_v8_id_seq));

INSERT INTO attempts (id, account_id, callback_id, webhook_id, events, started_at, duration_ms, status_code, error_kind,
                      response_body)
OVERRIDING SYSTEM VALUE
SELECT id, account_id, callback_id, webhook_id, events, started_at, duration_ms, status_code, error_kind, response_body
FROM attempts_v8;
SELECT setval(pg_get_serial_sequence('attempts', 'id'), (SELECT last_value FROM attempts_v8_id_seq),
              (SELECT is_called FROM attempts_v8_id_seq));

INSERT INTO source_receipts (event_id, account_id, source_id, received_at, raw)
SELECT r.event_id, r.account_id, r.source_id, e.recorded_at, r.raw
FROM source_receipts_v8 r JOIN events_v8 e ON e.id = r.event_id;

DROP TABLE source_receipts_v8, deliveries_v8, attempts_v8, events_v8;
