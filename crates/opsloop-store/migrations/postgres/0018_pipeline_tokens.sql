-- A pipeline's token (CI_JOB_TOKEN, OPSLOOP_TOKEN in its jobs): lets its jobs call the API of
-- their own project (e.g. `opsloop deploy`) with the rights of whoever started the pipeline.
-- Stored as a SHA-256 digest; deleted when the run ends, and useless after expires_at.
CREATE TABLE pipeline_tokens (
    token_digest TEXT PRIMARY KEY,
    pipeline_id BIGINT NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    username TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX pipeline_tokens_by_pipeline ON pipeline_tokens (pipeline_id);
