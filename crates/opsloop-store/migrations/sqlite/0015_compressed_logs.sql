-- Log chunks are stored deflated in `gz` (text chunks of earlier versions stay in `content`).
ALTER TABLE job_log_chunks ADD COLUMN gz BLOB;
