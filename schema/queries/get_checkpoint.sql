-- Where a projection stands in the log (no row: it never ran).
SELECT last_seq FROM projection_checkpoint WHERE name = $1;
