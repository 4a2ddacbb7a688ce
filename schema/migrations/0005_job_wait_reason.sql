-- Why a pending job is not placed (the provisioner's job.wait_reason_changed events);
-- NULL when it is not pending, or a worker is there or coming.
ALTER TABLE jobs ADD COLUMN wait_reason text;
