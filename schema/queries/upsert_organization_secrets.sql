-- Write the current rows of organization_secrets a projection batch changed (one row per call).
INSERT INTO organization_secrets (organization_id, name, ciphertext, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (organization_id, name) DO UPDATE SET
    ciphertext = EXCLUDED.ciphertext,
    created_at = EXCLUDED.created_at,
    updated_at = EXCLUDED.updated_at;
