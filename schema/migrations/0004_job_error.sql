-- Why a failed job failed (its job.failed event's error, e.g. "Process exited with return
-- code 3"); NULL unless it is failed (a restart or resubmission clears it).
ALTER TABLE jobs ADD COLUMN error text;
