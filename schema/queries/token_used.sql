-- Record a connection made with a token (the auth callout calls this).
INSERT INTO token_usage (token_id, last_used_at) VALUES ($1, $2)
ON CONFLICT (token_id) DO UPDATE SET last_used_at = GREATEST(token_usage.last_used_at, EXCLUDED.last_used_at);
