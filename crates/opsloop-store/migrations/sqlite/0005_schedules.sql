-- Pipeline schedules: cron in a time zone, a ref, variables; next_run_at claims each run once.
CREATE TABLE schedules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    description TEXT NOT NULL DEFAULT '',
    cron TEXT NOT NULL,
    timezone TEXT NOT NULL,
    ref TEXT NOT NULL,
    variables TEXT NOT NULL DEFAULT '{}',
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    next_run_at BIGINT NOT NULL,
    last_pipeline_id BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX schedules_due ON schedules(enabled, next_run_at);
