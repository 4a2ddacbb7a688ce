-- Jobs of an organization, newest first, optionally of one status ($2 NULL: any).
SELECT * FROM jobs
WHERE organization_id = $1 AND ($2::job_status IS NULL OR status = $2::job_status)
ORDER BY updated_at DESC, id
LIMIT $3;
