-- 0011: delivery controls. A callback's signature scheme (v1: HMAC-SHA256; v1a: ed25519, its public key
-- published), and a subscription's payload filter compiled to an SQL/JSON path the fan-out evaluates.
-- Online: two columns with defaults; version 10 processes ignore them, and a subscription they write
-- has no compiled filter, so the fan-out keeps reading its `filters` as version 10 does.
ALTER TABLE callbacks ADD COLUMN signature text NOT NULL DEFAULT 'v1' CHECK (signature IN ('v1', 'v1a'));
ALTER TABLE subscriptions ADD COLUMN filter_path jsonpath;
