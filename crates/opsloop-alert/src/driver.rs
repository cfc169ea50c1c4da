//! Runs an [`Engine`] in real time for a host: a tokio task sleeps until the engine's next
//! deadline (or until woken by new alerts or silences), ticks it with the injected clock and
//! hands the notifications to a channel the host sends from (see [`crate::notify::deliver`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use opsloop_core::clock::Clock;
use tokio::sync::{Notify, mpsc};

use crate::dispatch::{Engine, Notification};

/// The current time of a clock as a timestamp.
pub fn now(clock: &dyn Clock) -> Timestamp {
    Timestamp::from_millisecond(clock.now_ms()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A running engine; `wake` after `put` or silence changes so a nearer deadline is seen.
#[derive(Clone)]
pub struct Driver {
    pub engine: Arc<Mutex<Engine>>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

impl Driver {
    /// Spawns the loop on the current tokio runtime; notifications arrive on the receiver.
    pub fn spawn(engine: Engine, clock: Arc<dyn Clock>) -> (Driver, mpsc::UnboundedReceiver<Notification>) {
        let engine = Arc::new(Mutex::new(engine));
        let wake = Arc::new(Notify::new());
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = Driver { engine: engine.clone(), wake: wake.clone() };
        tokio::spawn(async move {
            loop {
                let (notifications, deadline) = {
                    let mut e = engine.lock().unwrap_or_else(|p| p.into_inner());
                    let notes = e.tick(now(clock.as_ref()));
                    (notes, e.next_deadline())
                };
                for n in notifications {
                    if tx.send(n).is_err() {
                        return;
                    }
                }
                let wait = deadline.map_or(Duration::from_secs(3600), |d| {
                    let ms = d.as_millisecond() - clock.now_ms();
                    Duration::from_millis(ms.clamp(0, 3_600_000) as u64)
                });
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = wake.notified() => {}
                }
            }
        });
        (driver, rx)
    }

    /// Runs `f` on the engine and wakes the loop.
    pub fn with<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        let out = {
            let mut e = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut e)
        };
        self.wake.notify_one();
        out
    }
}
