-- Approvals of deployments to environments that require them (`approvals: N` in
-- opsloop.yml): a deployment waits in `waiting_approval` until N people other than its
-- requester approved it.
CREATE TABLE deployment_approvals (
    deployment_id BIGINT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    username TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (deployment_id, username)
);
