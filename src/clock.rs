//! Wall-clock time for the live path. Stages that judge data (lanes, baselines,
//! detectors) take the time as an argument instead, so replay can run on a data clock.
//!
//! The live path's clock can be started at a chosen instant (`start_at`): it then
//! runs at the wall's pace from there. `driftwarden demo --start` uses this so its
//! daemon lives at the story's time, and a test can play the story at any minute
//! and weekday.

use std::sync::atomic::{AtomicI64, Ordering};

/// What `now_ms` adds to the wall clock: 0 unless `start_at` moved it.
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Milliseconds since the Unix epoch, now (on this process's clock).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis() + OFFSET_MS.load(Ordering::Relaxed)
}

/// Make `now_ms` read `at_ms` at this instant and run on from there at the wall's
/// pace, for the whole process. Called before anything reads the clock (the demo,
/// before its daemon starts), so every stage sees one consistent time line.
pub fn start_at(at_ms: i64) {
    let wall = chrono::Utc::now().timestamp_millis();
    OFFSET_MS.store(at_ms - wall, Ordering::Relaxed);
}
