-- Runs of an organization by job and/or worker ($2/$3 NULL: any), oldest first, so that
-- runs[-1] is the latest as users of the original expect.
SELECT * FROM runs
WHERE organization_id = $1
  AND ($2::text IS NULL OR job_id = $2)
  AND ($3::text IS NULL OR worker_id = $3)
  AND ($4::run_status IS NULL OR status = $4::run_status)
ORDER BY created_at, attempt
LIMIT $5;
