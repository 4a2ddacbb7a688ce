-- One run of an organization.
SELECT * FROM runs WHERE organization_id = $1 AND id = $2;
