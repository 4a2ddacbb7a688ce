-- Primary keys of a schema's tables, to drop and add back around a bulk load.
SELECT cl.relname AS tablename, c.conname, pg_get_constraintdef(c.oid) AS condef
FROM pg_constraint AS c
JOIN pg_class AS cl ON cl.oid = c.conrelid
WHERE c.connamespace = $1::regnamespace AND c.contype = 'p';
