-- One job of an organization.
SELECT * FROM jobs WHERE organization_id = $1 AND id = $2;
