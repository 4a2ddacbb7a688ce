-- Every run of the jobs a projection batch is about to change.
SELECT * FROM runs WHERE job_id = ANY($1::text[]);
