//! A gateway database followed by one replica at a time: on PostgreSQL the follower
//! runs only while this replica holds the source's lease (`source:<name>`), and its
//! batches carry the lease so their commits (rows and cursor together) check it.

use std::thread::JoinHandle;

use super::tenure::Held;
use crate::sources::SourceEnv;
use crate::sources::gateway_db::{DbSpec, Follower, HealthBoard};
use crate::stop::Stop;
use crate::store::pg::lease::Lease;

/// Start a follower thread for `spec` on `env`.
pub(super) fn spawn(spec: &DbSpec, env: SourceEnv, health: HealthBoard) -> JoinHandle<()> {
    let f = Follower::new(spec.clone(), env, health);
    std::thread::Builder::new()
        .name(format!("db:{}", spec.table))
        .spawn(move || f.run())
        .expect("spawning a database follower thread")
}

/// One gateway database source as a tenure's work.
pub(super) struct Following {
    pub spec: DbSpec,
    /// The source environment; its `stop` and `fence` are set per tenure.
    pub env: SourceEnv,
    pub health: HealthBoard,
}

impl Held for Following {
    type Running = (Stop, JoinHandle<()>);

    fn start(&mut self, lease: &Lease) -> Option<(Stop, JoinHandle<()>)> {
        let stop = Stop::default();
        let env = SourceEnv {
            stop: stop.clone(),
            fence: Some(lease.clone()),
            ..self.env.clone()
        };
        Some((stop, spawn(&self.spec, env, self.health.clone())))
    }

    fn end(&mut self, (stop, thread): (Stop, JoinHandle<()>)) {
        stop.set();
        if thread.join().is_err() {
            tracing::error!(source = %self.spec.name(), "database follower panicked");
        }
    }
}
