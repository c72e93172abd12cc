//! Model bumps: a requested model that now resolves to another model (a provider's
//! silent snapshot change), found from the resolved-model mix.

use serde_json::json;

use super::Test;
use super::rules::Rule;
use super::view::{BucketView, Detection};
use crate::domain::{ChangeEvent, ChangeKind, Scope, Signal, rfc3339_ms};
use crate::lanes::Symbols;
use crate::lanes::cell::Cell;

/// Fewest pooled requests before the dominant resolved model is known.
const MIN_POOL: f64 = 100.0;

/// One model scope's bump state: the resolved model it was last found switched to,
/// and the posted change that announced that switch, if one did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct BumpState {
    to: Option<u32>,
    cover: Option<ChangeEvent>,
}

/// A found bump: what to alert (muted when a posted change announced it) and, the
/// first time the switch shows, the change event detected from the data.
#[derive(Debug)]
pub struct Bump {
    /// The finding.
    pub detection: Detection,
    /// A new detected `model_bump` change event, when the switch first shows.
    pub detected: Option<ChangeEvent>,
}

/// Whether a change event's scope covers `labels` (every label it names matches).
fn overlaps(change: &ChangeEvent, labels: &Scope) -> bool {
    change
        .scope
        .iter()
        .all(|(k, v)| labels.get(k).is_none_or(|x| x == v))
}

/// The posted change that announces a switch showing in the bucket: any posted
/// change within `tolerance_ms` of it, or a posted `model_bump` whose warm-up
/// (`warmup_ms`) the bucket falls in (providers roll snapshots out gradually).
fn announcement<'a>(
    changes: &'a [ChangeEvent],
    view: &BucketView<Cell>,
    tolerance_ms: i64,
    warmup_ms: i64,
) -> Option<&'a ChangeEvent> {
    let posted = || changes.iter().filter(|c| c.origin != "detected");
    posted()
        .filter(|c| {
            c.ts_ms >= view.start_ms - tolerance_ms && c.ts_ms <= view.end_ms + tolerance_ms
        })
        .find(|c| overlaps(c, view.labels))
        .or_else(|| {
            posted().find(|c| {
                c.kind == ChangeKind::ModelBump
                    && (view.start_ms - warmup_ms..=view.end_ms).contains(&c.ts_ms)
                    && overlaps(c, view.labels)
            })
        })
}

/// A bump on a model scope: most of the bucket's requests resolve to a model other
/// than the one that dominated its pooled history. The switch stays announced for
/// as long as it is found once a posted change announced it.
pub fn detect(
    rule: &Rule,
    view: &BucketView<Cell>,
    syms: &Symbols,
    state: &mut BumpState,
    changes: &[ChangeEvent],
    (tolerance_ms, warmup_ms): (i64, i64),
) -> Option<Bump> {
    let model = view.labels.get("model")?;
    let cell = view.cell;
    let pool = view.mix(Signal::ResolvedModelMix);
    if pool.total() < MIN_POOL || (cell.requests as u64) < rule.min_samples {
        return None;
    }
    let before = pool.dominant()?;
    let &(now, n) = cell.resolved.iter().max_by_key(|(_, n)| *n)?;
    if now == before || (n as f64) < 0.5 * cell.requests as f64 {
        return None;
    }
    let (was, is) = (syms.name(before), syms.name(now));
    let posted = announcement(changes, view, tolerance_ms, warmup_ms).cloned();
    let first_seen = state.to != Some(now);
    let posted = match first_seen {
        true => posted,
        false => posted.or_else(|| state.cover.clone()),
    };
    let detected = first_seen.then(|| {
        state.to = Some(now);
        state.cover = posted.clone();
        ChangeEvent {
            kind: ChangeKind::ModelBump,
            ts_ms: view.start_ms,
            scope: Scope::from([("model".to_string(), model.clone())]),
            note: format!("{model} now resolves to {is} (was {was}); detected from the data"),
            origin: "detected".into(),
        }
    });
    let summary = format!(
        "model {model} now resolves to {is} (was {was}) and no change event announced it: post `driftwarden recalibrate --kind model_bump --scope model={model}` when you bump models, or ask the provider what changed"
    );
    let share = n as f64 / cell.requests as f64;
    let test = Test {
        sign: 1.0,
        rel: share,
        diff: share,
        z: 0.0,
        p_value: 0.0,
        name: "dominant resolved model",
    };
    let mut detection = Detection::new(
        Signal::ResolvedModelMix,
        test,
        (
            json!({"resolved_model": is}),
            json!({"resolved_model": was}),
        ),
        summary,
    );
    detection.muted = posted.map(|c| {
        format!(
            "announced by the {} change at {}",
            c.kind.as_str(),
            rfc3339_ms::format(c.ts_ms)
        )
    });
    Some(Bump {
        detection,
        detected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::one_rule;
    use crate::detect::view::testkit::{History, TEN_MIN, posted};

    struct World {
        syms: Symbols,
        history: History,
        state: BumpState,
    }

    /// Model `m`, whose requests resolved to `m-0613` for a day.
    fn world() -> World {
        let mut syms = Symbols::default();
        let old = syms.intern("m-0613");
        let mut history = History::new(&[("model", "m")]);
        for i in 0..144 {
            history.mixes[Signal::ResolvedModelMix.index()].add(&[(old, 50)], 0.99, i * TEN_MIN);
        }
        World {
            syms,
            history,
            state: BumpState::default(),
        }
    }

    fn judge(w: &mut World, at: i64, changes: &[ChangeEvent]) -> Option<Bump> {
        let rule = one_rule(
            "[[rule]]\nname = \"model-bump\"\ndetector = \"model_bump\"\nsignal = \"resolved_model_mix\"\nscopes = [\"model\"]\nmin_samples = 20\n",
        );
        let new = w.syms.intern("m-1106");
        let cell = Cell {
            requests: 50,
            resolved: vec![(new, 48)],
            ..Cell::default()
        };
        let view = w.history.view(at, &cell, false);
        detect(
            &rule,
            &view,
            &w.syms,
            &mut w.state,
            changes,
            (3_600_000, 21_600_000),
        )
    }

    #[test]
    fn a_silent_switch_is_found_and_detected_as_a_change_once() {
        let mut w = world();
        let at = 144 * TEN_MIN;
        let b = judge(&mut w, at, &[]).expect("a bump");
        assert!(b.detection.muted.is_none());
        assert!(
            b.detection
                .summary
                .starts_with("model m now resolves to m-1106 (was m-0613)"),
            "{}",
            b.detection.summary
        );
        let change = b.detected.expect("detected once");
        assert_eq!((change.kind, change.ts_ms), (ChangeKind::ModelBump, at));
        assert_eq!(change.origin, "detected");
        let again = judge(&mut w, at + TEN_MIN, &[]).expect("still found");
        assert!(again.detected.is_none());
    }

    #[test]
    fn a_posted_bump_announces_a_switch_that_shows_hours_later_and_for_as_long_as_it_lasts() {
        let mut w = world();
        let at = 144 * TEN_MIN;
        let posted = posted(
            ChangeKind::ModelBump,
            at - 3 * 3_600_000,
            &[("model", "m")],
            "to 1106",
        );
        let b = judge(&mut w, at, std::slice::from_ref(&posted)).expect("a bump");
        assert!(
            b.detection
                .muted
                .unwrap()
                .starts_with("announced by the model_bump change")
        );
        // Past the posted change's warm-up the switch it announced stays announced.
        let later = judge(&mut w, at + 8 * 3_600_000, &[posted]).expect("still found");
        assert!(later.detection.muted.is_some());
    }
}
