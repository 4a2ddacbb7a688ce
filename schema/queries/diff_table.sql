-- Rows of {table} that differ between the live schema {left} and a rebuild {right},
-- each with the side it is found on.
(SELECT 'live' AS side, t::text AS row FROM "{left}"."{table}" AS t
 EXCEPT SELECT 'live', t::text FROM "{right}"."{table}" AS t)
UNION ALL
(SELECT 'rebuild', t::text FROM "{right}"."{table}" AS t
 EXCEPT SELECT 'rebuild', t::text FROM "{left}"."{table}" AS t)
ORDER BY 2, 1
LIMIT $1;
