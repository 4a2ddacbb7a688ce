-- Jobs whose params contain the given JSON (top-level keys match like the original's find).
SELECT * FROM jobs
WHERE organization_id = $1 AND params @> $2::jsonb
ORDER BY updated_at DESC, id
LIMIT $3;
