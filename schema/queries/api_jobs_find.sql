-- Jobs whose params contain the given JSON (top-level keys match like the original's find),
-- after the job ($4 updated_at, $5 id) a previous page ended with ($4 NULL: from the top).
SELECT * FROM jobs
WHERE organization_id = $1 AND params @> $2::jsonb
  AND ($4::timestamptz IS NULL OR updated_at < $4 OR (updated_at = $4 AND id > $5::text))
ORDER BY updated_at DESC, id
LIMIT $3;
