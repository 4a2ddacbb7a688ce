-- Machines of an organization, newest first ($2: with ended ones), each with the job it
-- runs now (an in-progress job assigned to it), if any.
SELECT w.id, w.status, w.managed, w.backend, w.docker_image, w.hardware_type, w.gpu_type,
       w.gpu_count, w.vram_gb, w.reason, w.created_at, w.updated_at,
       (SELECT j.id FROM jobs AS j
        WHERE j.organization_id = w.organization_id AND j.worker_id = w.id
          AND j.status = 'in_progress'
        ORDER BY j.updated_at DESC LIMIT 1) AS current_job
FROM workers AS w
WHERE w.organization_id = $1 AND ($2 OR w.status IN ('starting', 'active'))
ORDER BY w.created_at DESC, w.id
LIMIT $3;
