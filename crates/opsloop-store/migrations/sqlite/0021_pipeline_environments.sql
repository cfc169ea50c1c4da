-- Each pipeline's jobs with an `environment:` (JSON: [{job, environment, action, on_stop}]),
-- so stopping an environment can play the `on_stop` job of the pipeline that deployed it.
ALTER TABLE pipelines ADD COLUMN environments TEXT NOT NULL DEFAULT '[]';
