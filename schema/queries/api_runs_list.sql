-- Runs of an organization by job and/or worker ($2/$3 NULL: any), oldest first, so that
-- runs[-1] is the latest as users of the original expect; after the run ($6 created_at,
-- $7 attempt, $8 id) a previous page ended with ($6 NULL: from the first).
SELECT * FROM runs
WHERE organization_id = $1
  AND ($2::text IS NULL OR job_id = $2)
  AND ($3::text IS NULL OR worker_id = $3)
  AND ($4::run_status IS NULL OR status = $4::run_status)
  AND ($6::timestamptz IS NULL OR (created_at, attempt, id) > ($6, $7::integer, $8::text))
ORDER BY created_at, attempt, id
LIMIT $5;
