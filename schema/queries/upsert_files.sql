-- Write the current rows of files a projection batch changed (one row per call).
INSERT INTO files (id, organization_id, filename, purpose, bytes, sha256, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO UPDATE SET
    organization_id = EXCLUDED.organization_id,
    filename = EXCLUDED.filename,
    purpose = EXCLUDED.purpose,
    bytes = EXCLUDED.bytes,
    sha256 = EXCLUDED.sha256,
    created_at = EXCLUDED.created_at;
