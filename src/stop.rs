//! One stop signal for every part of the daemon: async tasks (notification workers,
//! schedules) await it, source threads sleep on it and wake at once when it is set.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A stop signal; cheap to clone, every clone sees the same signal.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    /// What tasks await.
    token: CancellationToken,
    /// What threads sleep on: a condition variable, not a polled flag.
    sleepers: Arc<(Mutex<bool>, Condvar)>,
}

impl Stop {
    /// Ask every holder to stop.
    pub fn set(&self) {
        self.token.cancel();
        *self.flag() = true;
        self.sleepers.1.notify_all();
    }

    /// Whether a stop has been asked for.
    pub fn is_set(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Block the thread up to `d`, waking at once on stop. Returns whether to stop.
    pub fn sleep(&self, d: Duration) -> bool {
        let (stopped, _) = self
            .sleepers
            .1
            .wait_timeout_while(self.flag(), d, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        *stopped
    }

    /// Resolves once a stop has been asked for (for async tasks).
    pub async fn stopped(&self) {
        self.token.cancelled().await
    }

    /// The threads' flag; a thread that panicked holding it left a valid bool.
    fn flag(&self) -> std::sync::MutexGuard<'_, bool> {
        self.sleepers.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleeping_thread_wakes_when_stopped_and_sleeps_out_otherwise() {
        let stop = Stop::default();
        assert!(!stop.sleep(Duration::from_millis(1)));
        let sleeper = {
            let stop = stop.clone();
            std::thread::spawn(move || stop.sleep(Duration::from_secs(24 * 3600)))
        };
        stop.set();
        // Joins only because the day-long sleep woke on the stop.
        assert!(sleeper.join().unwrap());
        assert!(stop.is_set() && stop.sleep(Duration::from_secs(3600)));
    }

    #[tokio::test]
    async fn a_waiting_task_ends_when_stopped() {
        let stop = Stop::default();
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.stopped().await }
        });
        stop.set();
        waiter.await.unwrap();
        assert!(stop.is_set());
    }
}
