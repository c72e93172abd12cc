//! Sources read records from outside: the file tailer and the gateway database
//! follower live here; the HTTP webhooks
//! are in `api` and hand their bodies to the same ingest path.

pub mod clocks;
pub mod fingerprint;
pub mod gateway_db;
pub mod tail;

use std::sync::Arc;

use crate::adapters::Context;
use crate::stop::Stop;
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
    pub db: crate::store::Location,
    /// This replica's node name (tail checkpoints are per node on PostgreSQL).
    pub node: String,
    /// The lease a gateway database is followed under, on PostgreSQL: its batches
    /// carry it, and their commits check it.
    pub fence: Option<crate::store::pg::lease::Lease>,
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
