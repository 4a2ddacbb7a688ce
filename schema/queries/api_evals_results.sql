-- The newest score of each model and evaluation ($2: only that model's), newest first,
-- after the cursor ($4 seq, $5 idx; NULL: from the newest).
SELECT * FROM (
    SELECT DISTINCT ON (e.data->>'model', e.data->>'eval') e.seq, e.idx, e.job_id,
           e.run_id, e.data, e.created_at
    FROM events e
    WHERE e.organization_id = $1 AND e.data->>'type' = 'score'
      AND jsonb_typeof(e.data->'model') = 'string'
      AND jsonb_typeof(e.data->'eval') = 'string'
      AND jsonb_typeof(e.data->'metrics') = 'object'
      AND ($2::text IS NULL OR e.data->>'model' = $2)
    ORDER BY e.data->>'model', e.data->>'eval', e.seq DESC, e.idx DESC
) s
WHERE ($4::bigint IS NULL OR (s.seq, s.idx) < ($4::bigint, $5::integer))
ORDER BY s.seq DESC, s.idx DESC
LIMIT $3;
