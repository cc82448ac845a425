-- 0007: a callback's payload format and signature scheme: `standard` (Standard Webhooks JSON, v1
-- HMAC), `ens` (Marketing Cloud ENS arrays, x-sfmc-ens-signature) or `customerio` (Customer.io
-- reporting webhooks, X-CIO-Signature).
-- Online: the column has a default, so it is added without a rewrite, and version 6 processes keep
-- working beside it (they send every callback in the standard format until they are replaced).
ALTER TABLE callbacks ADD COLUMN format text NOT NULL DEFAULT 'standard'
    CHECK (format IN ('standard', 'ens', 'customerio'));
