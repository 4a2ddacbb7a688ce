-- One file of an organization.
SELECT * FROM files WHERE organization_id = $1 AND id = $2;
