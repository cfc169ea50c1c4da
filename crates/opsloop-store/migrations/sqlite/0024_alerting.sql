-- Incidents: opened when a notification group reaches an on-call receiver, joined by later
-- alerts with the same key while open. project_id is NULL for an incident of the instance.
CREATE TABLE incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id BIGINT REFERENCES projects(id) ON DELETE CASCADE,
    dedup_key TEXT NOT NULL,
    title TEXT NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL,
    escalation_policy TEXT NOT NULL,
    assignee TEXT,
    -- The alerts as the alerting engine last saw them (JSON array).
    alerts TEXT NOT NULL,
    -- The escalation's own state (JSON, the engine's) and when it next acts.
    escalation TEXT,
    next_escalation_at BIGINT,
    created_at BIGINT NOT NULL,
    acknowledged_at BIGINT,
    resolved_at BIGINT
);
CREATE INDEX incidents_by_key ON incidents (dedup_key, status);
CREATE INDEX incidents_due ON incidents (next_escalation_at);

-- Every step of an incident, in order: alerts, pages, acks, notes, state changes.
CREATE TABLE incident_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id BIGINT NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX incident_events_by_incident ON incident_events (incident_id, id);

-- A subsystem's durable state that is one document (the alerting engine's notification log
-- and silences), replaced whole.
CREATE TABLE subsystem_state (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Leases: one holder at a time of a named duty (evaluating alert timers), taken over once it
-- expires, so replicas on one database never notify twice.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Nonces of one-time links already used (acknowledge from a message), so a link works once.
CREATE TABLE used_nonces (
    nonce TEXT PRIMARY KEY,
    used_at BIGINT NOT NULL
);
