-- When each token was last used to connect. Written by the auth callout, not projected
-- from the log (a use is not a change of state), so replays neither rebuild nor compare it.
CREATE TABLE token_usage (
    token_id     text PRIMARY KEY,
    last_used_at timestamptz NOT NULL
);
