-- Rows of api_tokens a projection batch is about to change.
SELECT * FROM api_tokens WHERE id = ANY($1::text[]);
