-- Deployments (issue 5). A release is one version of a service: a commit and the service's
-- configuration read from opsloop.yml at that commit. A deployment takes a release to an
-- environment with a strategy; its timeline is kept as JSON. environment_services says which
-- release serves each service in each environment, so a restart brings back exactly that.
CREATE TABLE releases (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    service TEXT NOT NULL,
    version TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX releases_by_service ON releases (project_id, service, id);

CREATE TABLE deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    environment TEXT NOT NULL,
    service TEXT NOT NULL,
    release_id BIGINT NOT NULL REFERENCES releases(id) ON DELETE CASCADE,
    previous_release_id BIGINT REFERENCES releases(id) ON DELETE SET NULL,
    strategy TEXT NOT NULL,
    status TEXT NOT NULL,
    triggered_by TEXT NOT NULL,
    pipeline_id BIGINT,
    reason TEXT,
    timeline TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX deployments_by_environment ON deployments (project_id, environment, service, id);
CREATE INDEX deployments_by_status ON deployments (status);

CREATE TABLE environment_services (
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    environment TEXT NOT NULL,
    service TEXT NOT NULL,
    release_id BIGINT NOT NULL REFERENCES releases(id) ON DELETE CASCADE,
    deployment_id BIGINT NOT NULL,
    since BIGINT NOT NULL,
    PRIMARY KEY (project_id, environment, service)
);
