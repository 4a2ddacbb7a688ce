-- Jobs of an organization, newest first, optionally of one status ($2 NULL: any), of one
-- type ($3 NULL: any) and whose id or model contains $4 in any case ($4 NULL: any);
-- after the job ($6 updated_at, $7 id) a previous page ended with ($6 NULL: from the top).
SELECT * FROM jobs
WHERE organization_id = $1 AND ($2::job_status IS NULL OR status = $2::job_status)
  AND ($3::text IS NULL OR type = $3::text)
  AND ($4::text IS NULL OR strpos(lower(id), lower($4::text)) > 0
       OR strpos(lower(coalesce(model, '')), lower($4::text)) > 0)
  AND ($6::timestamptz IS NULL OR updated_at < $6 OR (updated_at = $6 AND id > $7::text))
ORDER BY updated_at DESC, id
LIMIT $5;
