-- Rows of organizations a projection batch is about to change.
SELECT * FROM organizations WHERE id = ANY($1::text[]);
