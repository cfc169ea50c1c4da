-- Each job's JUnit summary (`artifacts:reports:junit`), summed per pipeline for the test tab.
CREATE TABLE job_test_reports (
    job_id BIGINT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    passed BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    skipped BIGINT NOT NULL,
    -- JSON array of "classname.name: message" for each failed or erroring case.
    failures TEXT NOT NULL
);
