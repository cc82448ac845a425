-- 0008: the Marketing Cloud compatibility surface (dispatcher/api/compat/marketingcloud.py). Content
-- Builder assets an account creates for its send definitions, and what a Marketing Cloud definition
-- holds beyond a native one (the asset it was made from, its subscriptions and classification).
-- Online: two new tables; version 7 processes never read them.
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
