-- A job's page lists the deployments its pipeline made: found by pipeline, not by a scan.
CREATE INDEX deployments_by_pipeline ON deployments (pipeline_id);
