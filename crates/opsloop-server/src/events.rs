//! The event bus: hands the store's event log (`opsloop_core::Event`) to subscribers.
//!
//! Durable subscribers ([`Subscriber`]) each read the log from their own cursor in the store
//! and move it only after handling an event, so an event recorded before a crash reaches them
//! after the restart: at least once, in order. A subscriber that fails on an event is asked
//! again, with backoff, before it sees the next one. Live listeners ([`EventBus::subscribe`])
//! get each event as the bus passes it on, in memory, and miss what happens while they lag or
//! are away — for pages that refresh, never for anything that must not be lost.
//!
//! A new reaction to what happens (an alert when a deployment rolls back, DORA figures) is a
//! new `Subscriber` in [`subscribers`]; the code that records the change never learns of it.

use std::sync::Arc;
use std::time::Duration;

use opsloop_core::RecordedEvent;
use opsloop_store::Store;

use crate::state::AppState;

/// Events read from the log in one go.
const BATCH: i64 = 256;
/// How often the log is read without a wake-up, for events that other processes record.
const POLL: Duration = Duration::from_secs(2);
/// Events older than this are pruned once every subscriber has handled them.
const KEEP_MS: i64 = 7 * 86_400_000;

/// Why a subscriber could not handle an event; it is offered the same event again.
#[derive(Debug, thiserror::Error)]
pub enum SubscriberError {
    #[error(transparent)]
    Store(#[from] opsloop_store::StoreError),
}

/// What [`Subscriber::handle`] returns: a boxed future, so subscribers can sit in one list.
pub type Handled<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), SubscriberError>> + Send + 'a>>;

/// Reacts to events, at least once each, in the order they were recorded.
pub trait Subscriber: Send + Sync + 'static {
    /// Names its cursor in the store: stable across releases, unique among subscribers.
    fn name(&self) -> &'static str;
    fn handle<'a>(&'a self, state: &'a AppState, event: &'a RecordedEvent) -> Handled<'a>;
}

/// The durable subscribers, in one place.
pub fn subscribers() -> Vec<Arc<dyn Subscriber>> {
    vec![Arc::new(crate::notify::Webhooks), Arc::new(crate::loki::JobLogs)]
}

/// The in-memory side: live listeners.
pub struct EventBus {
    live: tokio::sync::broadcast::Sender<Arc<RecordedEvent>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus { live: tokio::sync::broadcast::channel(1024).0 }
    }
}

impl EventBus {
    /// Events from now on, as they are passed on; a listener that lags loses the oldest.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<RecordedEvent>> {
        self.live.subscribe()
    }
}

/// Runs every subscriber and the live fan-out until the server stops.
pub async fn run_forever(state: AppState) {
    let mut tasks = tokio::task::JoinSet::new();
    for subscriber in subscribers() {
        let state = state.clone();
        tasks.spawn(async move { dispatch(&state, subscriber.as_ref()).await });
    }
    {
        let state = state.clone();
        tasks.spawn(async move { fan_out(&state).await });
    }
    tasks.spawn(async move { prune(&state.store).await });
    while tasks.join_next().await.is_some() {}
}

async fn dispatch(state: &AppState, subscriber: &dyn Subscriber) {
    let name = subscriber.name();
    let mut cursor = loop {
        match state.store.event_cursor(name).await {
            Ok(cursor) => break cursor,
            Err(error) => {
                tracing::warn!(subscriber = name, %error, "cannot read the event cursor");
                tokio::time::sleep(POLL).await;
            }
        }
    };
    let mut failures = 0u32;
    loop {
        // Registered before reading, so an event committed between the read and the wait
        // still wakes us.
        let woken = state.store.event_recorded();
        let events = match state.store.events_after(cursor, BATCH).await {
            Ok(events) => events,
            Err(error) => {
                tracing::warn!(subscriber = name, %error, "cannot read the event log");
                Vec::new()
            }
        };
        if events.is_empty() {
            let _ = tokio::time::timeout(POLL, woken).await;
            continue;
        }
        for event in &events {
            match subscriber.handle(state, event).await {
                Ok(()) => {
                    failures = 0;
                    cursor = event.id;
                    if let Err(error) = state.store.advance_event_cursor(name, cursor).await {
                        // Handled but not noted: after a restart it is handled again, which
                        // at-least-once allows.
                        tracing::warn!(subscriber = name, event = event.id, %error, "cannot move the event cursor");
                    }
                }
                Err(error) => {
                    failures += 1;
                    let pause = Duration::from_millis(500u64 << failures.min(7));
                    tracing::warn!(subscriber = name, event = event.id, %error, retry_in = ?pause, "a subscriber failed; retrying");
                    tokio::time::sleep(pause).await;
                    break;
                }
            }
        }
    }
}

/// Passes each new event to live listeners.
async fn fan_out(state: &AppState) {
    let mut cursor = state.store.last_event_id().await.unwrap_or(0);
    loop {
        let woken = state.store.event_recorded();
        match state.store.events_after(cursor, BATCH).await {
            Ok(events) if !events.is_empty() => {
                for event in events {
                    cursor = event.id;
                    // No listener is not an error.
                    let _ = state.events.live.send(Arc::new(event));
                }
                continue;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot read the event log"),
        }
        let _ = tokio::time::timeout(POLL, woken).await;
    }
}

async fn prune(store: &Store) {
    let mut interval = tokio::time::interval(Duration::from_secs(3600));
    loop {
        interval.tick().await;
        match store.prune_events(store.now_ms() - KEEP_MS).await {
            Ok(0) => {}
            Ok(count) => tracing::debug!(count, "pruned handled events"),
            Err(error) => tracing::warn!(%error, "could not prune the event log"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use opsloop_core::{Event, PipelineStatus};
    use opsloop_store::test_support::TestDatabase;
    use opsloop_store::{Actor, NewProject};

    use super::*;

    /// Fails on its first try of every event, then notes it.
    struct Flaky {
        seen: Mutex<Vec<(i64, bool)>>,
    }

    impl Subscriber for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn handle<'a>(&'a self, _: &'a AppState, event: &'a RecordedEvent) -> Handled<'a> {
            Box::pin(async move {
                let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let retried = seen.iter().any(|(id, _)| *id == event.id);
                seen.push((event.id, retried));
                if retried {
                    Ok(())
                } else {
                    Err(SubscriberError::Store(opsloop_store::StoreError::Corrupt("first try".to_owned())))
                }
            })
        }
    }

    #[tokio::test]
    async fn a_failing_subscriber_gets_each_event_again_in_order_resumes_from_its_cursor_and_live_listeners_hear_new_ones()
     {
        let db = TestDatabase::sqlite().await;
        let store = db.store.clone();
        let actor = Actor { name: "tester", source_ip: "" };
        let state = crate::build_app_and_state(store.clone(), crate::ServerConfig::with_data_dir("/tmp".into())).1;
        let owner = store
            .create_user(
                opsloop_store::NewUser {
                    username: "owner",
                    display_name: "",
                    password_hash: "$argon2id$x",
                    is_admin: false,
                    must_change_password: false,
                },
                actor,
            )
            .await
            .unwrap();
        let project = NewProject {
            name: "bus",
            description: "",
            repo_url: "/srv/git/bus.git",
            default_branch: "main",
            pipeline_file: ".gitlab-ci.yml",
        };
        let project = store.create_project(project, owner.id, actor).await.unwrap();
        // The subscriber joins (its cursor starts at the end), then two pipelines end.
        store.event_cursor("flaky").await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let pipeline = store.create_pipeline(project.id, "main", "push", actor).await.unwrap();
            store.finish_pipeline(pipeline.id, PipelineStatus::Success, "").await.unwrap();
            ids.push(pipeline.id);
        }
        let flaky = Arc::new(Flaky { seen: Mutex::default() });
        let running = {
            let (state, flaky) = (state.clone(), flaky.clone());
            tokio::spawn(async move { dispatch(&state, flaky.as_ref()).await })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while store.event_cursor("flaky").await.unwrap() < store.last_event_id().await.unwrap() {
            assert!(std::time::Instant::now() < deadline, "the subscriber never caught up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        running.abort();
        let events = store.events_after(0, 10).await.unwrap();
        let expected: Vec<(i64, bool)> = events.iter().flat_map(|e| [(e.id, false), (e.id, true)]).collect();
        assert_eq!(*flaky.seen.lock().unwrap(), expected, "each event twice, the next only after the first");
        assert!(matches!(events[1].event, Event::PipelineFinished { pipeline_id, .. } if pipeline_id == ids[1]));
        // A restart: a new dispatcher starts from the cursor, so nothing is handled again.
        let again = Arc::new(Flaky { seen: Mutex::default() });
        let running = {
            let (state, again) = (state.clone(), again.clone());
            tokio::spawn(async move { dispatch(&state, again.as_ref()).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        running.abort();
        assert!(again.seen.lock().unwrap().is_empty());

        // Live listeners hear what happens from the moment they listen, in memory.
        let mut live = state.events.subscribe();
        let fanning = {
            let state = state.clone();
            tokio::spawn(async move { fan_out(&state).await })
        };
        // The fan-out starts at the end of the log; give it a moment to read where that is.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pipeline = store.create_pipeline(project.id, "main", "push", actor).await.unwrap();
        store.finish_pipeline(pipeline.id, PipelineStatus::Canceled, "").await.unwrap();
        let heard = tokio::time::timeout(Duration::from_secs(10), live.recv()).await.unwrap().unwrap();
        fanning.abort();
        assert_eq!(
            heard.event,
            Event::PipelineFinished {
                project_id: project.id,
                pipeline_id: pipeline.id,
                status: PipelineStatus::Canceled
            }
        );
    }
}
