-- Rows of workers a projection batch is about to change, by (organization, id).
SELECT w.* FROM workers w
JOIN unnest($1::text[], $2::text[]) AS k (organization_id, id)
  ON w.organization_id = k.organization_id AND w.id = k.id;
