-- A secret per project for incoming forge webhooks, and the deliveries seen (replays ignored).
ALTER TABLE projects ADD COLUMN webhook_secret TEXT NOT NULL DEFAULT '';

CREATE TABLE webhook_deliveries (
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    delivery TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, delivery)
);
