-- Write the current rows of api_tokens a projection batch changed (one row per call).
INSERT INTO api_tokens (id, organization_id, name, role, status, token_hash, token_prefix, worker_id, created_at, expires_at, revoked_at, spending_limit)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (id) DO UPDATE SET
    organization_id = EXCLUDED.organization_id,
    name = EXCLUDED.name,
    role = EXCLUDED.role,
    status = EXCLUDED.status,
    token_hash = EXCLUDED.token_hash,
    token_prefix = EXCLUDED.token_prefix,
    worker_id = EXCLUDED.worker_id,
    created_at = EXCLUDED.created_at,
    expires_at = EXCLUDED.expires_at,
    revoked_at = EXCLUDED.revoked_at,
    spending_limit = EXCLUDED.spending_limit;
