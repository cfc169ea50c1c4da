-- Outgoing webhooks on pipeline and job events, and every delivery with its attempts.
CREATE TABLE notification_hooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    -- The HMAC key, encrypted with the vault.
    secret TEXT NOT NULL,
    -- Comma-separated: pipeline, job.
    events TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX notification_hooks_project ON notification_hooks(project_id);

-- pending (next_attempt_at says when), delivered, or failed after the last attempt.
CREATE TABLE hook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hook_id BIGINT NOT NULL REFERENCES notification_hooks(id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    response_status BIGINT,
    last_error TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX hook_deliveries_due ON hook_deliveries(state, next_attempt_at);
CREATE INDEX hook_deliveries_hook ON hook_deliveries(hook_id, id);
