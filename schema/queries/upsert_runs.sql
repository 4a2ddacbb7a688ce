-- Write the current rows of runs a projection batch changed (one row per call).
INSERT INTO runs (id, job_id, attempt, organization_id, worker_id, status, log_file, created_at, updated_at, started_at, ended_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (id) DO UPDATE SET
    job_id = EXCLUDED.job_id,
    attempt = EXCLUDED.attempt,
    organization_id = EXCLUDED.organization_id,
    worker_id = EXCLUDED.worker_id,
    status = EXCLUDED.status,
    log_file = EXCLUDED.log_file,
    created_at = EXCLUDED.created_at,
    updated_at = EXCLUDED.updated_at,
    started_at = EXCLUDED.started_at,
    ended_at = EXCLUDED.ended_at;
