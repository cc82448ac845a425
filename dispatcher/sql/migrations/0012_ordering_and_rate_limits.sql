-- 0012: delivery controls, continued. Per-message ordering (callbacks.ordering, queue.message_key and a
-- partial index over ordered rows only) and rate limits kept in PostgreSQL (callbacks.rate_per_second and
-- rate_burst, one token bucket per limited callback in callback_rates, read with rate_tokens()).
-- Online: nullable columns and defaults (no rewrite), a new table, and an index over rows that do not
-- exist yet (the build reads the queue once: due deliveries only). Version 11 processes ignore all of it:
-- while one still runs, it fans out without message keys and claims without limits.
ALTER TABLE callbacks ADD COLUMN ordering text NOT NULL DEFAULT 'none' CHECK (ordering IN ('none', 'messageKey'));
ALTER TABLE callbacks ADD COLUMN rate_per_second float8 CHECK (rate_per_second > 0 AND rate_per_second <= 1000);
ALTER TABLE callbacks ADD COLUMN rate_burst integer CHECK (rate_burst BETWEEN 1 AND 10000);
ALTER TABLE callbacks ADD CHECK ((rate_per_second IS NULL) = (rate_burst IS NULL));

CREATE TABLE callback_rates (
    callback_id  bigint PRIMARY KEY REFERENCES callbacks ON DELETE CASCADE,
    tokens       float8 NOT NULL,
    refilled_at  timestamptz NOT NULL DEFAULT now(),
    pace         float8 NOT NULL DEFAULT 1 CHECK (pace > 0 AND pace <= 1),
    slowed_until timestamptz NOT NULL DEFAULT '-infinity'
);

CREATE FUNCTION rate_tokens(r callback_rates, per_second float8, burst integer) RETURNS float8
LANGUAGE sql STABLE AS $$
    SELECT least(burst::float8, r.tokens + extract(epoch FROM now() - r.refilled_at)::float8 * per_second
                                           * CASE WHEN r.slowed_until > now() THEN r.pace ELSE 1 END)
$$;

ALTER TABLE queue ADD COLUMN message_key text;
CREATE INDEX queue_ordered ON queue (callback_id, message_key, event_id) WHERE message_key IS NOT NULL;

-- The message_key a queue row of this callback carries for this event: its messageKey when the callback
-- delivers in order per message, else NULL (re-queueing: sql/deliveries.sql).
CREATE FUNCTION ordered_key(callback bigint, event bigint, recorded timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT e.message_key FROM events e, callbacks c
    WHERE c.id = callback AND c.ordering = 'messageKey' AND e.id = event AND e.recorded_at = recorded
$$;
