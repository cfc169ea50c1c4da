-- Pipeline trigger tokens (GitLab's): a script holding one starts pipelines of its project
-- with CI_PIPELINE_SOURCE=trigger. Stored as SHA-256 digests.
CREATE TABLE pipeline_triggers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    description TEXT NOT NULL,
    token_digest TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
