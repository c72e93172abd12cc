//! Sources read records from outside: the file tailer and the gateway database
//! follower live here; the HTTP webhooks
//! are in `api` and hand their bodies to the same ingest path.

pub mod clocks;
pub mod fingerprint;
pub mod gateway_db;
pub mod tail;

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::adapters::Context;
use crate::store::writer::{InFlight, Writer};
use crate::telemetry::Metrics;

/// What every source thread works with: how to decode, where to commit, where its
/// checkpoints are read back from, what to count, and when to stop.
#[derive(Clone)]
pub struct SourceEnv {
    /// Pricing, identities and limits for the adapters.
    pub ctx: Arc<Context>,
    /// The store's writer thread.
    pub writer: Writer,
    /// driftwarden's database, for reading committed checkpoints and cursors.
    pub db_path: PathBuf,
    /// The daemon's metrics.
    pub metrics: Arc<Metrics>,
    /// The shutdown signal.
    pub stop: Stop,
    /// Where each pulling source reports its data clock.
    pub clocks: clocks::SourceClocks,
}

impl SourceEnv {
    /// An in-flight commit slot for `source` that reports each landed batch's
    /// newest event time as the source's data clock.
    pub fn in_flight(&self, source: &str) -> InFlight {
        let (clocks, source) = (self.clocks.clone(), source.to_string());
        InFlight::reporting(move |newest| clocks.delivered(&source, newest, crate::clock::now_ms()))
    }
}

/// The stop signal every source thread watches; cheap to clone. A sleeping thread
/// wakes at once when it is set (a condition variable, not a polled flag).
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<(Mutex<bool>, Condvar)>);

impl Stop {
    /// Ask every holder to stop.
    pub fn set(&self) {
        *self.flag() = true;
        self.0.1.notify_all();
    }

    /// Whether a stop has been asked for.
    pub fn is_set(&self) -> bool {
        *self.flag()
    }

    /// Sleep up to `d`, waking at once on stop. Returns whether to stop.
    pub fn sleep(&self, d: Duration) -> bool {
        let (stopped, _) = self
            .0
            .1
            .wait_timeout_while(self.flag(), d, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        *stopped
    }

    /// The flag; a thread that panicked holding it left a valid bool.
    fn flag(&self) -> std::sync::MutexGuard<'_, bool> {
        self.0.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleeping_source_wakes_when_stopped_and_sleeps_out_otherwise() {
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
}
