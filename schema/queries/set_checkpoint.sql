-- Written in the same transaction as the rows of the batch it records.
INSERT INTO projection_checkpoint (name, last_seq, updated_at)
VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE SET last_seq = EXCLUDED.last_seq, updated_at = EXCLUDED.updated_at;
