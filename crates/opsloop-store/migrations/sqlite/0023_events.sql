-- The event log: what happened, written in the transaction of the change itself, read by each
-- subscriber from its own cursor (at least once). No foreign key to projects: an event outlives
-- a deleted project until it is pruned.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    project_id BIGINT NOT NULL,
    payload TEXT NOT NULL
);

CREATE TABLE event_cursors (
    subscriber TEXT PRIMARY KEY,
    last_id BIGINT NOT NULL
);
