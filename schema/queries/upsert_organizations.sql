-- Write the current rows of organizations a projection batch changed (one row per call).
INSERT INTO organizations (id, name, created_at, updated_at, spending_limit)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name,
    created_at = EXCLUDED.created_at,
    updated_at = EXCLUDED.updated_at,
    spending_limit = EXCLUDED.spending_limit;
