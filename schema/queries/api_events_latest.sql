-- The newest non-null value of each key ($5 NULL: every key) over the events of a job or
-- a run, by key (in code point order, as clients compare), after key $4 (NULL: the first).
SELECT DISTINCT ON (kv.key COLLATE "C") kv.key, kv.value
FROM events e, jsonb_each(e.data) AS kv
WHERE e.organization_id = $1
  AND ($2::text IS NULL OR e.job_id = $2)
  AND ($3::text IS NULL OR e.run_id = $3)
  AND ($4::text IS NULL OR kv.key COLLATE "C" > $4::text COLLATE "C")
  AND ($5::text[] IS NULL OR kv.key = ANY($5::text[]))
  AND jsonb_typeof(kv.value) <> 'null'
ORDER BY kv.key COLLATE "C", e.seq DESC, e.idx DESC;
