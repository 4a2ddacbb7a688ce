-- Secrets a projection batch is about to change, by (organization, name).
SELECT s.* FROM organization_secrets s
JOIN unnest($1::text[], $2::text[]) AS k (organization_id, name)
  ON s.organization_id = k.organization_id AND s.name = k.name;
