//! The `EventSink` that writes a server pipeline's job statuses and logs to the store as they
//! happen: logs buffered into deflated chunks, a job's stored log capped, artifacts uploaded
//! before a job shows finished.

use super::*;

/// Writes runner events to the store in order, on its own task: the runner reports
/// synchronously and must not wait for the database.
#[derive(Clone)]
pub(super) struct StoreSink {
    pub(super) events: mpsc::UnboundedSender<Event>,
}

/// Log text is stored in chunks of about this size.
pub(super) const CHUNK_BYTES: usize = 16 * 1024;

/// A job's log on its way to the store. It stops growing at `limit` (`ci.max_job_log_mib`,
/// 4 MiB by default as GitLab Runner's `output_limit`): a job that prints without end must not
/// fill the disk. The job itself runs on.
pub(super) struct PendingLog {
    pub(super) limit: usize,
    pub(super) text: String,
    pub(super) next_chunk: i64,
    /// Bytes accepted so far, stored or pending.
    pub(super) bytes: usize,
    pub(super) truncated: bool,
}

impl PendingLog {
    pub(super) fn new(limit: usize) -> Self {
        PendingLog { limit, text: String::new(), next_chunk: 0, bytes: 0, truncated: false }
    }

    /// Adds a line unless the log is full; the first line refused leaves a note instead.
    pub(super) fn push_line(&mut self, line: &str) {
        if self.truncated {
            return;
        }
        if self.bytes + line.len() + 1 > self.limit {
            self.truncated = true;
            let note = format!(
                "# the job log exceeded {} MiB; the job runs on, but no more output is kept\n",
                self.limit / (1024 * 1024)
            );
            self.bytes += note.len();
            self.text.push_str(&note);
            return;
        }
        self.bytes += line.len() + 1;
        self.text.push_str(line);
        self.text.push('\n');
    }
}

impl StoreSink {
    pub(super) fn start(
        store: Store,
        job_ids: Vec<i64>,
        uploads: Option<ArtifactUploads>,
        log_limit: usize,
    ) -> (Arc<StoreSink>, tokio::task::JoinHandle<()>) {
        let (events, mut receiver) = mpsc::unbounded_channel::<Event>();
        let writer = tokio::spawn(async move {
            let mut buffers: HashMap<usize, PendingLog> = HashMap::new();
            async fn flush(store: &Store, job_id: i64, buffer: &mut PendingLog) {
                if buffer.text.is_empty() {
                    return;
                }
                let text = std::mem::take(&mut buffer.text);
                let seq = buffer.next_chunk;
                buffer.next_chunk += 1;
                if let Err(error) = store.append_job_log(job_id, seq, &text).await {
                    tracing::error!(job = job_id, %error, "could not store a log chunk");
                }
            }
            // Lines reach the store within half a second, so live views see them.
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                let event = tokio::select! {
                    event = receiver.recv() => match event {
                        Some(event) => event,
                        None => break,
                    },
                    _ = tick.tick() => {
                        for (job, buffer) in buffers.iter_mut() {
                            if let Some(id) = job_ids.get(*job) {
                                flush(&store, *id, buffer).await;
                            }
                        }
                        continue;
                    }
                };
                let (job, line) = match &event {
                    Event::JobStarted { job, .. } => {
                        if let Some(id) = job_ids.get(*job) {
                            logged(store.job_started(*id).await, "job started");
                        }
                        continue;
                    }
                    Event::Command { job, text, .. } => (*job, format!("$ {text}")),
                    Event::Environment { job, environment, url, .. } => {
                        let url = url.as_deref().map(|u| format!(" at {u}")).unwrap_or_default();
                        (*job, format!("# environment: {environment}{url}"))
                    }
                    Event::Output { job, line, stream: Stream::Stdout, .. } => (*job, line.clone()),
                    Event::Output { job, line, stream: Stream::Stderr, .. } => (*job, line.clone()),
                    Event::Note { job, text, .. } => (*job, format!("# {text}")),
                    Event::AfterScript { job, .. } => (*job, "# running after_script".to_owned()),
                    Event::Delayed { job, seconds, .. } => {
                        if let Some(id) = job_ids.get(*job) {
                            logged(store.job_scheduled(*id).await, "job scheduled");
                        }
                        (*job, format!("# delayed: starting in {seconds}s"))
                    }
                    Event::JobFinished { job, outcome, .. } => {
                        let Some(id) = job_ids.get(*job).copied() else { continue };
                        // Artifacts are stored before the job shows as finished, so a finished
                        // job's artifacts can be downloaded.
                        if let Some(uploads) = &uploads
                            && let Some(line) = uploads.upload(&store, *job, id).await
                        {
                            buffers.entry(*job).or_insert_with(|| PendingLog::new(log_limit)).push_line(&line);
                        }
                        // Flush, but keep the chunk counter: a child pipeline's jobs report under
                        // their trigger job's index, one after another.
                        if let Some(buffer) = buffers.get_mut(job) {
                            flush(&store, id, buffer).await;
                        }
                        let status = match outcome.status {
                            JobStatus::Success => StoredJobStatus::Success,
                            JobStatus::Warning => StoredJobStatus::Warning,
                            JobStatus::Failed => StoredJobStatus::Failed,
                            JobStatus::Skipped => StoredJobStatus::Skipped,
                            JobStatus::Manual => StoredJobStatus::Manual,
                            JobStatus::Canceled => StoredJobStatus::Canceled,
                        };
                        if let Some(tests) = &outcome.tests {
                            let report = opsloop_store::TestReport {
                                passed: i64::from(tests.passed),
                                failed: i64::from(tests.failed),
                                skipped: i64::from(tests.skipped),
                                failures: tests.failures.clone(),
                            };
                            if let Err(error) = store.record_test_report(id, &report).await {
                                tracing::error!(job = id, %error, "could not store a test report");
                            }
                        }
                        // Records the job's `JobFinished` event too (webhooks hear of it there).
                        logged(store.job_finished(id, status, outcome.exit_code.map(i64::from)).await, "job finished");
                        continue;
                    }
                };
                let Some(id) = job_ids.get(job).copied() else { continue };
                let buffer = buffers.entry(job).or_insert_with(|| PendingLog::new(log_limit));
                buffer.push_line(&line);
                if buffer.text.len() >= CHUNK_BYTES {
                    flush(&store, id, buffer).await;
                }
            }
            for (job, buffer) in buffers.iter_mut() {
                if let Some(id) = job_ids.get(*job) {
                    flush(&store, *id, buffer).await;
                }
            }
        });
        (Arc::new(StoreSink { events }), writer)
    }
}

impl EventSink for StoreSink {
    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }
}
