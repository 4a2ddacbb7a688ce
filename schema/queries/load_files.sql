-- Rows of files a projection batch is about to change.
SELECT * FROM files WHERE id = ANY($1::text[]);
