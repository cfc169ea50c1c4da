-- A job's artifacts: one zip archive in the object store, and when it expires (artifacts:expire_in).
CREATE TABLE job_artifacts (
    job_id BIGINT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    object_key TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    file_count BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    -- NULL: kept until the job (or its project) is deleted.
    expire_at BIGINT
);
CREATE INDEX job_artifacts_expiry ON job_artifacts(expire_at);
