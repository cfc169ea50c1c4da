-- Polling a project's repository: how often, when last, and the refs seen.
ALTER TABLE projects ADD COLUMN poll_interval_seconds BIGINT NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN polled_at BIGINT NOT NULL DEFAULT 0;

CREATE TABLE polled_refs (
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    ref TEXT NOT NULL,
    sha TEXT NOT NULL,
    PRIMARY KEY (project_id, ref)
);
