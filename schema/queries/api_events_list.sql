-- Run events of a job or a run, in log order, after a position (for resuming): after
-- event $6 of message $4 (every event of it: $6 = 2147483647).
SELECT seq, idx, job_id, run_id, data, file, created_at FROM events
WHERE organization_id = $1
  AND ($2::text IS NULL OR job_id = $2)
  AND ($3::text IS NULL OR run_id = $3)
  AND (seq > $4 OR (seq = $4 AND idx > $6::integer))
ORDER BY seq, idx
LIMIT $5;
