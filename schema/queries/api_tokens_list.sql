-- Tokens of an organization with when each was last used; never the hash.
SELECT t.id, t.name, t.role, t.status, t.token_prefix, t.worker_id, t.created_at,
       t.expires_at, t.revoked_at, u.last_used_at
FROM api_tokens AS t LEFT JOIN token_usage AS u ON u.token_id = t.id
WHERE t.organization_id = $1 AND t.role IN ('admin', 'user')
ORDER BY t.created_at;
