-- Runs of an organization ($2: only those open after it; $3: only this job's), with the
-- token that submitted their job, for domain/cost.py's share of each machine's time.
SELECT r.organization_id AS org, r.job_id, r.id AS run_id, r.worker_id, r.created_at,
       r.ended_at, j.submitted_by
FROM runs AS r
JOIN jobs AS j ON j.id = r.job_id
WHERE r.organization_id = $1
  AND ($2::timestamptz IS NULL OR r.ended_at IS NULL OR r.ended_at > $2)
  AND ($3::text IS NULL OR r.job_id = $3);
