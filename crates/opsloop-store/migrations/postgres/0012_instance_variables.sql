-- CI/CD variables of the whole instance (every project's pipelines), ciphertext only; a
-- project's own variable of the same key wins.
CREATE TABLE instance_variables (
    key TEXT NOT NULL,
    environment_scope TEXT NOT NULL DEFAULT '*',
    ciphertext TEXT NOT NULL,
    masked BOOLEAN NOT NULL DEFAULT FALSE,
    protected BOOLEAN NOT NULL DEFAULT FALSE,
    file BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (key, environment_scope)
);
