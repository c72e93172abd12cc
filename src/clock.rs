//! Wall-clock time for the live path. Stages that judge data (lanes, baselines,
//! detectors) take the time as an argument instead, so replay can run on a data clock.

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
