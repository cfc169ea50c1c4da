-- A project's CI settings: its own limit of jobs at once, and whether a new pipeline cancels
-- older ones on the same ref whose started jobs are all interruptible.
CREATE TABLE project_ci_settings (
    project_id BIGINT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    max_concurrent_jobs BIGINT NOT NULL DEFAULT 0,
    auto_cancel_redundant BOOLEAN NOT NULL DEFAULT FALSE
);
