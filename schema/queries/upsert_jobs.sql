-- Write the current rows of jobs a projection batch changed (one row per call).
INSERT INTO jobs (id, organization_id, type, model, params, script, docker_image, requires_vram_gb, allowed_hardware, status, worker_id, outputs, timeout, created_at, updated_at, error, wait_reason, submitted_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
ON CONFLICT (id) DO UPDATE SET
    organization_id = EXCLUDED.organization_id,
    type = EXCLUDED.type,
    model = EXCLUDED.model,
    params = EXCLUDED.params,
    script = EXCLUDED.script,
    docker_image = EXCLUDED.docker_image,
    requires_vram_gb = EXCLUDED.requires_vram_gb,
    allowed_hardware = EXCLUDED.allowed_hardware,
    status = EXCLUDED.status,
    worker_id = EXCLUDED.worker_id,
    outputs = EXCLUDED.outputs,
    timeout = EXCLUDED.timeout,
    created_at = EXCLUDED.created_at,
    updated_at = EXCLUDED.updated_at,
    error = EXCLUDED.error,
    wait_reason = EXCLUDED.wait_reason,
    submitted_by = EXCLUDED.submitted_by;
