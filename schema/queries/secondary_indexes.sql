-- Indexes of a schema that no constraint owns (safe to drop and rebuild around a bulk load).
SELECT i.tablename, i.indexname, i.indexdef
FROM pg_indexes AS i
WHERE i.schemaname = $1
  AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c
                  WHERE c.conname = i.indexname AND c.connamespace = $1::regnamespace);
