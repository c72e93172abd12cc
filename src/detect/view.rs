//! What a detector sees of one scope in one bucket, and what it says back.

use std::cell::OnceCell;

use serde_json::{Map, Value};

use super::Test;
use crate::baselines::{BaselineParams, Mix, Series};
use crate::domain::{Baseline, Scope, Signal};

/// One scope's bucket as the detectors see it: what was observed (`cell`, a usage
/// [`Cell`](crate::lanes::cell::Cell) or an [`EvalCell`](crate::lanes::cell::EvalCell)),
/// the scope's series and mixes (baselines, epochs, anchors) and whether a change's
/// warm-up runs. Each signal's baseline is computed once however many rules and
/// open alerts read it.
pub struct BucketView<'a, C> {
    /// Start of the bucket, ms.
    pub start_ms: i64,
    /// End of the bucket, ms.
    pub end_ms: i64,
    /// The scope's labels.
    pub labels: &'a Scope,
    /// What the bucket counted.
    pub cell: &'a C,
    /// The scope's series, by [`Signal::index`].
    pub series: &'a [Series],
    /// The scope's pooled mixes, by [`Signal::index`].
    pub mixes: &'a [Mix],
    /// A change's warm-up covers the bucket: drift is muted, steps and creep unjudged.
    pub warming: bool,
    /// How baselines learn.
    pub params: &'a BaselineParams,
    bases: [OnceCell<Option<Baseline>>; Signal::ALL.len()],
}

impl<'a, C> BucketView<'a, C> {
    /// The view of `cell` for the bucket `[start_ms, end_ms)` of a scope.
    pub fn new(
        (start_ms, end_ms): (i64, i64),
        labels: &'a Scope,
        cell: &'a C,
        (series, mixes): (&'a [Series], &'a [Mix]),
        warming: bool,
        params: &'a BaselineParams,
    ) -> BucketView<'a, C> {
        BucketView {
            start_ms,
            end_ms,
            labels,
            cell,
            series,
            mixes,
            warming,
            params,
            bases: std::array::from_fn(|_| OnceCell::new()),
        }
    }

    /// `signal`'s baseline for this bucket (seasonal only for volume signals, whose
    /// level depends on the hour), if there is enough history.
    pub fn base(&self, signal: Signal) -> Option<Baseline> {
        *self.bases[signal.index()].get_or_init(|| {
            self.series[signal.index()].baseline(self.start_ms, signal.seasonal_only(), self.params)
        })
    }

    /// `signal`'s series.
    pub fn series(&self, signal: Signal) -> &'a Series {
        &self.series[signal.index()]
    }

    /// `signal`'s pooled mix.
    pub fn mix(&self, signal: Signal) -> &'a Mix {
        &self.mixes[signal.index()]
    }
}

/// A detector's positive judgement, before the engine adds the scope's impact,
/// the rule and the links that make it a [`Finding`](super::Finding).
#[derive(Debug, Clone)]
pub struct Detection {
    /// The test that found it.
    pub test: Test,
    /// What was observed (`evidence.observed`).
    pub observed: Value,
    /// What it was judged against (`evidence.baseline`).
    pub baseline: Value,
    /// One sentence a person reads.
    pub summary: String,
    /// The detector's own evidence (the signal, its test's statistics).
    pub evidence: Map<String, Value>,
    /// Past a hard guard: never muted.
    pub hard: bool,
    /// Why it must not alert though found (a change event covers it).
    pub muted: Option<String>,
}

impl Detection {
    /// A detection on `signal` with no hard guard and nothing muting it.
    pub fn new(
        signal: Signal,
        test: Test,
        (observed, baseline): (Value, Value),
        summary: String,
    ) -> Detection {
        let mut evidence = Map::new();
        evidence.insert("signal".into(), serde_json::json!(signal));
        Detection {
            test,
            observed,
            baseline,
            summary,
            evidence,
            hard: false,
            muted: None,
        }
    }
}

/// A scope's history as the detectors' tests build it: series and mixes learned
/// bucket by bucket, viewed in one ten-minute bucket with a cell of the test's.
#[cfg(test)]
pub(crate) mod testkit {
    use super::BucketView;
    use crate::baselines::{BaselineParams, Mix, Series};
    use crate::domain::{ChangeEvent, ChangeKind, Scope, Signal};

    /// One bucket of the tests' lanes.
    pub(crate) const TEN_MIN: i64 = 600_000;

    /// The scope of `labels`; none is global.
    fn scope(labels: &[(&str, &str)]) -> Scope {
        labels
            .iter()
            .map(|(d, v)| (d.to_string(), v.to_string()))
            .collect()
    }

    /// A change event of `kind` on the scope of `labels`, as posted to `/recalibrate`.
    pub(crate) fn posted(
        kind: ChangeKind,
        ts_ms: i64,
        labels: &[(&str, &str)],
        note: &str,
    ) -> ChangeEvent {
        ChangeEvent {
            kind,
            ts_ms,
            scope: scope(labels),
            note: note.into(),
            origin: "api".into(),
        }
    }

    /// One scope's labels, series and mixes, learned with the default parameters.
    pub(crate) struct History {
        pub(crate) labels: Scope,
        pub(crate) series: Vec<Series>,
        pub(crate) mixes: Vec<Mix>,
        pub(crate) params: BaselineParams,
    }

    impl History {
        /// The scope of `labels` (none: global), with nothing learned yet.
        pub(crate) fn new(labels: &[(&str, &str)]) -> History {
            History {
                labels: scope(labels),
                series: vec![Series::default(); Signal::ALL.len()],
                mixes: vec![Mix::default(); Signal::ALL.len()],
                params: BaselineParams::default(),
            }
        }

        /// `signal`'s series learns `value(i)` at the start of each ten-minute bucket
        /// `i` of `buckets`.
        pub(crate) fn learn(
            &mut self,
            signal: Signal,
            buckets: std::ops::Range<i64>,
            value: impl Fn(i64) -> f64,
        ) -> &mut History {
            for i in buckets {
                self.series[signal.index()].push(i * TEN_MIN, value(i), &self.params);
            }
            self
        }

        /// The view of `cell` in the ten-minute bucket starting at `at`.
        pub(crate) fn view<'a, C>(
            &'a self,
            at: i64,
            cell: &'a C,
            warming: bool,
        ) -> BucketView<'a, C> {
            BucketView::new(
                (at, at + TEN_MIN),
                &self.labels,
                cell,
                (&self.series, &self.mixes),
                warming,
                &self.params,
            )
        }
    }
}
