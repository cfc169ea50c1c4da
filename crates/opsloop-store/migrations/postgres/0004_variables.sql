-- CI/CD variables of a project; values are ciphertext from opsloop-secure's vault.
CREATE TABLE project_variables (
    project_id BIGINT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    environment_scope TEXT NOT NULL DEFAULT '*',
    ciphertext TEXT NOT NULL,
    masked BOOLEAN NOT NULL DEFAULT FALSE,
    protected BOOLEAN NOT NULL DEFAULT FALSE,
    file BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, key, environment_scope)
);
