-- Agents: processes on other machines that run jobs, each with its own token (stored as a
-- digest), and the queue of jobs handed to them.
CREATE TABLE agents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    token_digest TEXT NOT NULL UNIQUE,
    -- Comma-separated, sorted; set by the agent when it registers.
    tags TEXT NOT NULL DEFAULT '',
    concurrency BIGINT NOT NULL DEFAULT 1,
    version TEXT NOT NULL DEFAULT '',
    hostname TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL DEFAULT 0,
    revoked_at BIGINT
);

-- A job waiting for an agent (queued), run by one (running), or no longer the agents' concern
-- (done, or lost when its agent stopped heartbeating).
CREATE TABLE agent_jobs (
    job_id BIGINT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    tags TEXT NOT NULL DEFAULT '',
    -- The job's spec as JSON, encrypted with the vault: it holds the job's secrets.
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    agent_id BIGINT REFERENCES agents(id) ON DELETE SET NULL,
    attempt BIGINT NOT NULL DEFAULT 1,
    queued_at BIGINT NOT NULL,
    claimed_at BIGINT,
    heartbeat_at BIGINT,
    cancel_requested BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX agent_jobs_state ON agent_jobs(state, job_id);
