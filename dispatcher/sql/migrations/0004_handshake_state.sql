-- 0004: the ownership handshake's state on the callback: the outcome of the latest verification
-- request (sent, then delivered or failed), and when a retry is due (also the lease of a request in
-- flight), with the key kept encrypted while a retry may still need it.
-- Online: version 3 processes keep working beside it (they never read these columns, and the defaults
-- fit the callbacks they create). The columns are added without a rewrite; the index build blocks
-- writes to `callbacks` (a small table) while it runs.
ALTER TABLE callbacks
    ADD COLUMN verification_key_enc bytea,
    ADD COLUMN verification_status text CHECK (verification_status IN ('sent', 'delivered', 'failed')),
    ADD COLUMN verification_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN verification_last_attempt_at timestamptz,
    ADD COLUMN verification_status_code integer,
    ADD COLUMN verification_error text,
    ADD COLUMN verification_next_at timestamptz;
CREATE INDEX callbacks_handshake_due ON callbacks (verification_next_at) WHERE verification_next_at IS NOT NULL;
