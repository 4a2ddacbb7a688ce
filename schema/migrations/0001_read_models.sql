-- Read models projected from the event log. Everything here can be dropped and rebuilt
-- with `ow replay`; the log (JetStream) is the truth. Unqualified names: the projector
-- and the replay tool choose the schema with search_path.

-- Job states mirror openweights.domain.job (see its docstring for their meaning).
CREATE TYPE job_status AS ENUM ('pending', 'in_progress', 'completed', 'failed', 'canceled');
-- A run is one execution of a job by one worker.
CREATE TYPE run_status AS ENUM ('in_progress', 'completed', 'failed', 'canceled');
-- Worker states mirror openweights.domain.worker.
CREATE TYPE worker_status AS ENUM ('starting', 'active', 'shutdown', 'terminated');
CREATE TYPE token_role AS ENUM ('admin', 'user', 'worker', 'service');
CREATE TYPE token_status AS ENUM ('active', 'revoked');

CREATE TABLE organizations (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE api_tokens (
    id              text PRIMARY KEY,
    organization_id text NOT NULL,
    name            text NOT NULL,
    role            token_role NOT NULL,
    status          token_status NOT NULL,
    token_hash      text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    token_prefix    text NOT NULL,
    worker_id       text,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz,
    revoked_at      timestamptz,
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
CREATE INDEX api_tokens_org ON api_tokens (organization_id);

CREATE TABLE organization_secrets (
    organization_id text NOT NULL,
    name            text NOT NULL,
    ciphertext      text NOT NULL,  -- never plaintext: encrypted with OW_SECRET_KEY
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (organization_id, name)
);

CREATE TABLE files (
    id              text PRIMARY KEY,
    organization_id text NOT NULL,
    filename        text NOT NULL,
    purpose         text NOT NULL,
    bytes           bigint NOT NULL CHECK (bytes >= 0),
    sha256          text NOT NULL,
    created_at      timestamptz NOT NULL
);
CREATE INDEX files_org ON files (organization_id, created_at);

CREATE TABLE workers (
    id              text PRIMARY KEY,
    organization_id text NOT NULL,
    status          worker_status NOT NULL,
    managed         boolean NOT NULL,
    backend         text,
    docker_image    text,
    hardware_type   text,
    gpu_type        text,
    gpu_count       integer NOT NULL CHECK (gpu_count >= 0),
    vram_gb         integer NOT NULL CHECK (vram_gb >= 0),
    pod_id          text,   -- the backend's machine id (a RunPod pod id in production)
    ttl_until       timestamptz,
    logfile         text,
    reason          text,
    cached_models   text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX workers_org_status ON workers (organization_id, status);

CREATE TABLE jobs (
    id               text PRIMARY KEY,
    organization_id  text NOT NULL,
    type             text NOT NULL,
    model            text,
    params           jsonb NOT NULL,
    script           text NOT NULL,
    docker_image     text NOT NULL,
    requires_vram_gb integer CHECK (requires_vram_gb IS NULL OR requires_vram_gb >= 0),
    allowed_hardware text[],
    status           job_status NOT NULL,
    worker_id        text,
    outputs          jsonb NOT NULL DEFAULT '{}',
    timeout          timestamptz,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    -- A pending job is nobody's; a job in progress is exactly one worker's.
    CHECK (status <> 'pending' OR worker_id IS NULL),
    CHECK (status <> 'in_progress' OR worker_id IS NOT NULL)
);
CREATE INDEX jobs_org_updated ON jobs (organization_id, updated_at DESC);
CREATE INDEX jobs_org_status ON jobs (organization_id, status);
CREATE INDEX jobs_params ON jobs USING gin (params jsonb_path_ops);

CREATE TABLE runs (
    id              text PRIMARY KEY,
    job_id          text NOT NULL,
    attempt         integer NOT NULL CHECK (attempt >= 1),
    organization_id text NOT NULL,
    worker_id       text NOT NULL,
    status          run_status NOT NULL,
    log_file        text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    started_at      timestamptz
);
CREATE UNIQUE INDEX runs_job ON runs (job_id, attempt);
CREATE INDEX runs_worker ON runs (worker_id, status);

-- Run events: what jobs logged and the files they returned. Keyed by the log position
-- (stream sequence, index within the message), so a replay yields the same keys.
CREATE TABLE events (
    seq             bigint NOT NULL,
    idx             integer NOT NULL,
    organization_id text NOT NULL,
    job_id          text NOT NULL,
    run_id          text NOT NULL,
    data            jsonb NOT NULL,
    file            text,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (seq, idx)
);
CREATE INDEX events_run ON events (run_id, seq);
CREATE INDEX events_job ON events (job_id, seq);

-- Where each projection stands in the log; written in the same transaction as its rows.
CREATE TABLE projection_checkpoint (
    name        text PRIMARY KEY,
    last_seq    bigint NOT NULL CHECK (last_seq >= 0),
    updated_at  timestamptz NOT NULL
);
