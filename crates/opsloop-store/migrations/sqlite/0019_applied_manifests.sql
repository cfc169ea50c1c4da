-- GitOps: the opsloop.yml (as read, JSON) last applied from each project's default branch,
-- so the next change of that branch can be shown as a plan (created / changed / removed).
CREATE TABLE applied_manifests (
    project_id BIGINT PRIMARY KEY REFERENCES projects(id) ON DELETE CASCADE,
    commit_sha TEXT NOT NULL,
    manifest TEXT NOT NULL,
    applied_at BIGINT NOT NULL
);
