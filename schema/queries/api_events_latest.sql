-- The newest non-null value of each key over the events of a job or a run.
SELECT DISTINCT ON (kv.key) kv.key, kv.value
FROM events e, jsonb_each(e.data) AS kv
WHERE e.organization_id = $1
  AND ($2::text IS NULL OR e.job_id = $2)
  AND ($3::text IS NULL OR e.run_id = $3)
  AND jsonb_typeof(kv.value) <> 'null'
ORDER BY kv.key, e.seq DESC, e.idx DESC;
