//! Data clocks of the pulling sources (tailed files, gateway databases): how far each
//! has delivered. The live analysis closes a bucket only once every such source has
//! delivered past it, so a source that is catching up on a backlog is never taken
//! for silence, while a source that is caught up and receives nothing is silence.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// How long a failing source (or one that never reported) holds back the others.
/// Past it, bucket closing goes on without it: its rows are stored when it comes
/// back but count as late for the analysis, and `/v1/stats` shows it failing.
pub const FAILING_HOLD_MS: i64 = 30 * 60_000;

/// What a source has told of its progress.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceClock {
    /// The source's name (`tail:/path`, `db:...`), as its records are labelled.
    pub source: String,
    /// `starting`, `catching_up`, `live` or `failing`.
    pub state: &'static str,
    /// Data time up to which everything it reads has been delivered, ms.
    pub clock_ms: Option<i64>,
    /// Newest record time it delivered, ms.
    pub newest_record_ms: Option<i64>,
    /// Wall time of its last delivery of records, ms.
    pub last_delivery_ms: Option<i64>,
    /// Wall time it last found itself at the end of what it reads, ms.
    pub caught_up_ms: Option<i64>,
    /// Since when it fails, ms.
    pub failing_since_ms: Option<i64>,
    /// Its last error, if it is failing.
    pub error: Option<String>,
    /// When it was registered, ms.
    #[serde(skip)]
    registered_ms: i64,
}

impl SourceClock {
    /// The data time this source holds the analysis at, at wall time `now_ms`:
    /// `Some(None)` while it has not reported (hold everything), `None` when it
    /// holds nothing (failing, or silent since registering, for longer than the
    /// hold).
    fn holds(&self, now_ms: i64) -> Option<Option<i64>> {
        let stuck_since = match self.clock_ms {
            None => Some(self.registered_ms),
            Some(_) => self.failing_since_ms,
        };
        if stuck_since.is_some_and(|s| now_ms - s > FAILING_HOLD_MS) {
            return None;
        }
        Some(self.clock_ms)
    }
}

/// Every pulling source's clock; cheap to clone, shared by the sources, the live
/// analysis and the API.
#[derive(Debug, Clone, Default)]
pub struct SourceClocks(Arc<Mutex<BTreeMap<String, SourceClock>>>);

impl SourceClocks {
    /// Count `source` in from `now_ms` on: until it reports, it holds the analysis.
    pub fn register(&self, source: &str, now_ms: i64) {
        self.update(source, now_ms, |_| {});
    }

    /// Apply `f` to `source`'s clock, registering it at `now_ms` if it is new.
    fn update(&self, source: &str, now_ms: i64, f: impl FnOnce(&mut SourceClock)) {
        let mut map = self.0.lock().expect("source clocks lock");
        let clock = map
            .entry(source.to_string())
            .or_insert_with(|| SourceClock {
                source: source.to_string(),
                state: "starting",
                registered_ms: now_ms,
                ..SourceClock::default()
            });
        f(clock);
    }

    /// `source`'s records up to data time `newest_ms` have landed (committed and
    /// handed to the analysis).
    pub fn delivered(&self, source: &str, newest_ms: i64, now_ms: i64) {
        self.update(source, now_ms, |c| {
            c.newest_record_ms = Some(c.newest_record_ms.map_or(newest_ms, |n| n.max(newest_ms)));
            c.clock_ms = Some(c.clock_ms.map_or(newest_ms, |k| k.max(newest_ms)));
            c.last_delivery_ms = Some(now_ms);
            c.failing_since_ms = None;
            c.error = None;
            if c.state != "live" {
                c.state = "catching_up";
            }
        });
    }

    /// `source` was at the end of what it reads at wall time `at_ms`, and all it had
    /// read by then has landed: nothing written before `at_ms` is still to come.
    pub fn caught_up(&self, source: &str, at_ms: i64) {
        self.update(source, at_ms, |c| {
            c.clock_ms = Some(c.clock_ms.map_or(at_ms, |k| k.max(at_ms)));
            c.caught_up_ms = Some(at_ms);
            c.failing_since_ms = None;
            c.error = None;
            c.state = "live";
        });
    }

    /// `source` failed at `now_ms` with `error` (credentials already removed).
    pub fn failing(&self, source: &str, now_ms: i64, error: &str) {
        self.update(source, now_ms, |c| {
            c.failing_since_ms = Some(c.failing_since_ms.unwrap_or(now_ms));
            c.error = Some(error.to_string());
            c.state = "failing";
        });
    }

    /// The data time the analysis may close buckets up to at wall time `now_ms`:
    /// the slowest source's clock, never past `now_ms`; `None` while a source has
    /// not reported yet. With no pulling sources, `now_ms`.
    pub fn watermark(&self, now_ms: i64) -> Option<i64> {
        let map = self.0.lock().expect("source clocks lock");
        let mut mark = now_ms;
        for c in map.values() {
            match c.holds(now_ms) {
                Some(Some(clock)) => mark = mark.min(clock),
                Some(None) => return None,
                None => {}
            }
        }
        Some(mark)
    }

    /// Every source's clock, by name.
    pub fn snapshot(&self) -> Vec<SourceClock> {
        let map = self.0.lock().expect("source clocks lock");
        map.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn the_slowest_source_holds_the_clock_and_a_caught_up_one_follows_the_wall() {
        let clocks = SourceClocks::default();
        let now = 1_000 * MIN;
        assert_eq!(clocks.watermark(now), Some(now), "no pulling sources");
        clocks.register("tail:a", now);
        clocks.register("db:b", now);
        assert_eq!(clocks.watermark(now), None, "nobody reported yet");
        clocks.caught_up("tail:a", now);
        assert_eq!(clocks.watermark(now), None, "b has not reported");
        // b is reading a backlog: buckets close along its data, not the wall.
        clocks.delivered("db:b", now - 600 * MIN, now);
        assert_eq!(clocks.watermark(now + MIN), Some(now - 600 * MIN));
        clocks.delivered("db:b", now - 5 * MIN, now + MIN);
        assert_eq!(clocks.watermark(now + MIN), Some(now - 5 * MIN));
        // Both caught up and quiet: the wall clock closes buckets (silence is seen).
        clocks.caught_up("db:b", now + 2 * MIN);
        clocks.caught_up("tail:a", now + 3 * MIN);
        assert_eq!(clocks.watermark(now + 4 * MIN), Some(now + 2 * MIN));
        let states: Vec<&str> = clocks.snapshot().iter().map(|c| c.state).collect();
        assert_eq!(states, ["live", "live"]);
    }

    #[test]
    fn a_failing_source_holds_the_others_for_a_while_then_lets_go() {
        let clocks = SourceClocks::default();
        let now = 1_000 * MIN;
        clocks.caught_up("tail:a", now);
        clocks.caught_up("db:b", now);
        clocks.failing("db:b", now + MIN, "connection refused");
        clocks.caught_up("tail:a", now + 10 * MIN);
        assert_eq!(clocks.watermark(now + 10 * MIN), Some(now), "b is held for");
        let later = now + MIN + FAILING_HOLD_MS + 1;
        clocks.caught_up("tail:a", later);
        assert_eq!(clocks.watermark(later), Some(later), "b no longer holds");
        let b = &clocks.snapshot()[0];
        assert_eq!((b.source.as_str(), b.state), ("db:b", "failing"));
        assert_eq!(b.error.as_deref(), Some("connection refused"));
        // Back: it holds again from where it is.
        clocks.caught_up("db:b", later);
        assert_eq!(clocks.watermark(later), Some(later));
        assert_eq!(clocks.snapshot()[0].state, "live");
    }

    #[test]
    fn a_source_that_never_reports_holds_only_for_a_while() {
        let clocks = SourceClocks::default();
        let now = 1_000 * MIN;
        clocks.register("db:b", now);
        assert_eq!(clocks.watermark(now + MIN), None);
        let later = now + FAILING_HOLD_MS + 1;
        assert_eq!(clocks.watermark(later), Some(later));
    }
}
