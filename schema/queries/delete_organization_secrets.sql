-- A removed secret leaves no row behind.
DELETE FROM organization_secrets WHERE organization_id = $1 AND name = $2;
