-- Each job's `needs` (JSON: job name -> the names it needs; jobs that wait for their stage are
-- absent), for the pipeline page's graph.
ALTER TABLE pipelines ADD COLUMN needs_graph TEXT NOT NULL DEFAULT '{}';
