-- Machines of an organization that cost anything ($2: only those alive after it), for
-- domain/cost.py: a price and a lifetime each. Hand-joined workers never started by a
-- backend have no machine_started_at and cost nothing.
SELECT w.organization_id AS org, w.id AS worker_id, w.price_per_hour,
       w.machine_started_at AS started_at, w.machine_ended_at AS ended_at
FROM workers AS w
WHERE w.organization_id = $1 AND w.machine_started_at IS NOT NULL
  AND w.price_per_hour > 0
  AND ($2::timestamptz IS NULL OR w.machine_ended_at IS NULL OR w.machine_ended_at > $2);
