-- Rows of workers a projection batch is about to change.
SELECT * FROM workers WHERE id = ANY($1::text[]);
