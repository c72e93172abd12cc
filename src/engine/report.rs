//! Change-impact reports: what a change event did, per signal, and the levels
//! learned as the new normal as detected changes with their reports.

use serde::Serialize;

use super::Engine;
use super::open::{Lasting, LastingVerdict};
use crate::baselines::Verdict;
use crate::detect::words::{round, signal_words};
use crate::domain::{ChangeEvent, ChangeKind, Scope, Signal, rfc3339_ms, scope_label};
use crate::lanes::scopes::ScopeId;

/// Before/after comparison of one signal for a change-impact report.
#[derive(Debug, Clone, Serialize)]
pub struct SignalImpact {
    /// The signal.
    pub signal: Signal,
    /// The comparison.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// What a change event did, per signal, with confidence.
#[derive(Debug, Clone, Serialize)]
pub struct ImpactReport {
    /// The change.
    pub change: ChangeEvent,
    /// When the report was made (data time), ms.
    pub at_ms: i64,
    /// The scope the report is about.
    pub scope: Scope,
    /// Numeric signals compared before and after.
    pub signals: Vec<SignalImpact>,
    /// Mixes and distributions that moved: (signal, total variation, p-value).
    pub mixes: Vec<(Signal, f64, f64)>,
    /// One paragraph a person reads.
    pub summary: String,
}

impl Engine {
    /// Lasting levels learned by their series: each becomes a detected change event
    /// with its impact report, and a note for its alert's resolve.
    pub(super) fn learned(
        &mut self,
        lasting: Vec<(ScopeId, Lasting)>,
        at_ms: i64,
    ) -> Vec<(String, Scope, String)> {
        let mut notes = Vec::new();
        for (id, l) in lasting {
            let labels = self.lanes.index.labels(id).clone();
            let rule = &self.rules[l.rule];
            let what = signal_words(l.signal);
            let change = ChangeEvent {
                kind: ChangeKind::ConfigChange,
                ts_ms: l.since_ms,
                scope: labels.clone(),
                note: format!(
                    "{what} on {} stayed away from its baseline for {} h with no change event; learned as the new normal (detected from the data)",
                    scope_label(&labels),
                    (at_ms - l.since_ms) / 3_600_000
                ),
                origin: "detected".into(),
            };
            notes.push((
                rule.name.clone(),
                labels.clone(),
                format!(
                    "{what} on {} held its new level since {}: learned as the new normal (a detected config_change with its impact report, see `driftwarden changes`). If the level is not acceptable, fix its cause: the way back is judged against the new level and announced",
                    scope_label(&labels),
                    rfc3339_ms::format(l.since_ms)
                ),
            ));
            self.out.changes.push(change.clone());
            self.changes.push(change.clone());
            let (signals, mixes) = match l.verdict {
                LastingVerdict::Scalar(v) => (
                    vec![SignalImpact {
                        signal: l.signal,
                        verdict: v,
                    }],
                    Vec::new(),
                ),
                LastingVerdict::Mix(tvd, p) => (Vec::new(), vec![(l.signal, round(tvd), p)]),
            };
            self.report(change, labels, signals, mixes, at_ms);
        }
        notes
    }

    pub(super) fn report(
        &mut self,
        change: ChangeEvent,
        labels: Scope,
        signals: Vec<SignalImpact>,
        mixes: Vec<(Signal, f64, f64)>,
        at_ms: i64,
    ) {
        let moved: Vec<String> =
            signals
                .iter()
                .filter(|s| s.verdict.changed)
                .map(|s| {
                    format!(
                        "{} {:+.0}% (p={:.1e})",
                        signal_words(s.signal),
                        s.verdict.shift * 100.0,
                        s.verdict.p_value
                    )
                })
                .chain(mixes.iter().map(|(s, tvd, _)| {
                    format!("{} shifted (total variation {tvd})", signal_words(*s))
                }))
                .collect();
        let summary = if moved.is_empty() {
            format!(
                "{} on {} ({}): no signal moved beyond noise; baselines kept their history",
                change.kind.as_str(),
                scope_label(&change.scope),
                change.note
            )
        } else {
            format!(
                "{} on {} ({}): {}; baselines for these signals restarted from post-change data",
                change.kind.as_str(),
                scope_label(&change.scope),
                change.note,
                moved.join(", ")
            )
        };
        self.out.reports.push(ImpactReport {
            scope: labels,
            change,
            at_ms,
            signals,
            mixes,
            summary,
        });
    }
}
