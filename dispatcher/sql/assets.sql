-- name: create_asset
-- A new Content Builder asset.
INSERT INTO mc_assets (account_id, customer_key, name, asset_type, views)
VALUES ($1, $2, $3, $4, $5) RETURNING *

-- name: get_asset
-- An asset by id.
SELECT * FROM mc_assets WHERE account_id = $1 AND id = $2

-- name: asset_by_key
-- An asset by customerKey.
SELECT * FROM mc_assets WHERE account_id = $1 AND customer_key = $2

-- name: list_assets
-- A page of an account's assets, optionally one customerKey or name.
SELECT *, count(*) OVER () AS total FROM mc_assets
WHERE account_id = $1 AND ($2::text IS NULL OR customer_key = $2) AND ($3::text IS NULL OR name = $3)
ORDER BY id LIMIT $4 OFFSET $5

-- name: save_definition_extras
-- What a Marketing Cloud definition holds beyond the native one.
INSERT INTO mc_definitions (definition_id, asset_key, subscriptions, classification) VALUES ($1, $2, $3, $4)
ON CONFLICT (definition_id) DO UPDATE SET asset_key = $2, subscriptions = $3, classification = $4

-- name: definition_extras
-- The Marketing Cloud fields of definitions, by definition id.
SELECT * FROM mc_definitions WHERE definition_id = ANY($1::bigint[])
