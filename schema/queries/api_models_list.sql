-- The newest announcement of each model ($3: only that model id; $2: only one job's),
-- newest first, after the cursor ($5 seq, $6 idx; NULL: from the newest).
SELECT * FROM (
    SELECT DISTINCT ON (e.data->>'model_id') e.seq, e.idx, e.job_id, e.run_id, e.data,
           e.created_at
    FROM events e
    WHERE e.organization_id = $1 AND e.data->>'type' = 'model'
      AND e.data ? 'model_id' AND e.data ? 'files'
      AND e.data->>'kind' IN ('lora', 'merged')
      AND ($2::text IS NULL OR e.job_id = $2)
      AND ($3::text IS NULL OR e.data->>'model_id' = $3)
    ORDER BY e.data->>'model_id', e.seq DESC, e.idx DESC
) m
WHERE ($5::bigint IS NULL OR (m.seq, m.idx) < ($5::bigint, $6::integer))
ORDER BY m.seq DESC, m.idx DESC
LIMIT $4;
