-- 0002: the attempt log keeps one row per HTTP request, which a batch's deliveries share; each
-- delivery lists its requests in order (deliveries.attempt_ids).
-- NOT online: stop every version 1 process first. They write attempts(delivery_id, number), which
-- this removes, so they could no longer record outcomes; and the conversion rewrites `attempts` and
-- `deliveries` under an exclusive lock for as long as it takes.
--
-- Version 1 logged one row per delivery (delivery_id, number): those rows become requests of one
-- event, and each delivery's attempt_ids gets one position per attempt it made (NULL where the row was
-- purged; of two rows with one number, from a lease lost mid-request, the first), so numbers stay as
-- they were.
ALTER TABLE deliveries ADD COLUMN attempt_ids bigint[] NOT NULL DEFAULT '{}';
ALTER TABLE attempts ADD COLUMN callback_id bigint, ADD COLUMN webhook_id text,
                     ADD COLUMN events integer NOT NULL DEFAULT 1;
UPDATE attempts a SET callback_id = d.callback_id FROM deliveries d WHERE d.id = a.delivery_id;
UPDATE deliveries d
SET attempt_ids = (
    SELECT array_agg((SELECT min(a.id) FROM attempts a WHERE a.delivery_id = d.id AND a.number = n) ORDER BY n)
    FROM generate_series(1, greatest(d.attempts, (SELECT max(a.number) FROM attempts a WHERE a.delivery_id = d.id))) n)
WHERE d.attempts > 0 OR EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = d.id);
ALTER TABLE attempts DROP COLUMN delivery_id, DROP COLUMN number,  -- drops attempts_delivery with it
                     ALTER COLUMN callback_id SET NOT NULL, ALTER COLUMN events DROP DEFAULT,
                     ADD FOREIGN KEY (callback_id) REFERENCES callbacks ON DELETE CASCADE;
CREATE INDEX attempts_callback ON attempts (callback_id, id);

-- A version 1 database last started by a release older than version 1's final text may still have the
-- indexes that text replaced (those releases re-applied their schema.sql whenever its text changed).
CREATE INDEX IF NOT EXISTS deliveries_claim ON deliveries (callback_id, next_attempt_at, id) WHERE status = 'pending';
DROP INDEX IF EXISTS deliveries_due, deliveries_created;
CREATE TABLE IF NOT EXISTS schema_applied (
    checksum    text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
