-- Row count and an order-independent digest of one read-model table ({schema}.{table}
-- are checked identifiers). Rows are compared by their text form, so two schemas with
-- their own enum types still compare equal.
SELECT count(*) AS rows,
       coalesce(md5(string_agg(t::text, E'\n' ORDER BY t::text)), md5('')) AS digest
FROM "{schema}"."{table}" AS t;
