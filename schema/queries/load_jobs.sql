-- Rows of jobs a projection batch is about to change.
SELECT * FROM jobs WHERE id = ANY($1::text[]);
