-- Terraform states kept for Terraform's `http` backend: one row per project and state name,
-- created by the first lock or write.
CREATE TABLE terraform_states (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

-- Every version written, kept (a state's history is how a bad apply is understood). The body
-- is vault ciphertext; the digest (SHA-256 of the plaintext) tells an idempotent retry of the
-- same serial from a different state claiming it.
CREATE TABLE terraform_state_versions (
    state_id BIGINT NOT NULL REFERENCES terraform_states(id) ON DELETE CASCADE,
    serial BIGINT NOT NULL,
    lineage TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    pipeline_id BIGINT,
    job_id BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (state_id, serial)
);

-- At most one lock per state (the primary key is the compare-and-set): Terraform's lock
-- info as sent, and the opsloop user who took it.
CREATE TABLE terraform_locks (
    state_id BIGINT PRIMARY KEY REFERENCES terraform_states(id) ON DELETE CASCADE,
    lock_id TEXT NOT NULL,
    who TEXT NOT NULL,
    operation TEXT NOT NULL,
    info TEXT NOT NULL,
    locked_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
