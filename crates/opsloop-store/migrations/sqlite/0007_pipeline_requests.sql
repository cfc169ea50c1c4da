-- What a pipeline was asked to run, kept so a pipeline still queued when the server stopped
-- can start after the restart exactly as requested: the pushed commit (empty: the ref's head)
-- and its variables (encrypted by the server; empty: none).
ALTER TABLE pipelines ADD COLUMN requested_sha TEXT NOT NULL DEFAULT '';
ALTER TABLE pipelines ADD COLUMN requested_variables TEXT NOT NULL DEFAULT '';
