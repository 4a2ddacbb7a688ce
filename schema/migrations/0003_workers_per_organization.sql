-- Workers are keyed by (organization, id): whoever starts an agent chooses its id, so two
-- organizations may each have a worker of the same name, and neither learns of the other's.
ALTER TABLE workers DROP CONSTRAINT workers_pkey;
ALTER TABLE workers ADD PRIMARY KEY (organization_id, id);
