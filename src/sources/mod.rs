//! Sources read records from outside: the file tailer and the gateway database
//! follower live here; the HTTP webhooks
//! are in `api` and hand their bodies to the same ingest path.

pub mod clocks;
pub mod fingerprint;
pub mod gateway_db;
pub mod tail;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The stop signal every source thread watches; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// Ask every holder to stop.
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a stop has been asked for.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Sleep up to `d`, waking early (within 20 ms) on stop. Returns whether to stop.
    pub fn sleep(&self, d: Duration) -> bool {
        let step = Duration::from_millis(20);
        let mut left = d;
        while !left.is_zero() {
            if self.is_set() {
                return true;
            }
            let s = left.min(step);
            std::thread::sleep(s);
            left -= s;
        }
        self.is_set()
    }
}
