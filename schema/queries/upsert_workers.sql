-- Write the current rows of workers a projection batch changed (one row per call).
INSERT INTO workers (id, organization_id, status, managed, backend, docker_image, hardware_type, gpu_type, gpu_count, vram_gb, pod_id, ttl_until, logfile, reason, cached_models, created_at, updated_at, price_per_hour, machine_started_at, machine_ended_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
ON CONFLICT (organization_id, id) DO UPDATE SET
    status = EXCLUDED.status,
    managed = EXCLUDED.managed,
    backend = EXCLUDED.backend,
    docker_image = EXCLUDED.docker_image,
    hardware_type = EXCLUDED.hardware_type,
    gpu_type = EXCLUDED.gpu_type,
    gpu_count = EXCLUDED.gpu_count,
    vram_gb = EXCLUDED.vram_gb,
    pod_id = EXCLUDED.pod_id,
    ttl_until = EXCLUDED.ttl_until,
    logfile = EXCLUDED.logfile,
    reason = EXCLUDED.reason,
    cached_models = EXCLUDED.cached_models,
    created_at = EXCLUDED.created_at,
    updated_at = EXCLUDED.updated_at,
    price_per_hour = EXCLUDED.price_per_hour,
    machine_started_at = EXCLUDED.machine_started_at,
    machine_ended_at = EXCLUDED.machine_ended_at;
