-- What machines cost and who spent it (issue 14): a machine's price per hour and its
-- lifetime (worker.machine_started/2 .. worker.terminated), a run's end, the token that
-- submitted a job, and the lifetime spending limits of organizations and tokens. Costs
-- are computed from these at query time, with "now" as a parameter; `ow replay` fills
-- them for rows projected before this migration.
ALTER TABLE workers ADD COLUMN price_per_hour double precision NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN machine_started_at timestamptz;
ALTER TABLE workers ADD COLUMN machine_ended_at timestamptz;
ALTER TABLE runs ADD COLUMN ended_at timestamptz;
ALTER TABLE jobs ADD COLUMN submitted_by text;
ALTER TABLE organizations ADD COLUMN spending_limit double precision;
ALTER TABLE api_tokens ADD COLUMN spending_limit double precision;
CREATE INDEX runs_org_worker ON runs (organization_id, worker_id);
