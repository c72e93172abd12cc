//! Incidents: the alerts of one cause under one root, so one real change reaches a
//! team as one message. Pure bookkeeping; the stage stores and routes.
//!
//! An alert that starts firing joins an open incident when its scope is related to a
//! member's — the same scope, a parent or child, or linked through traffic (one scope
//! is a model the other's requests go to) — and it started close to the incident
//! (or on a scope already in it). Otherwise it opens an incident of its own, as root.
//! An alert firing again on a member's scope soon after its incident resolved
//! reopens that incident instead of opening a new one.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::domain::{Alert, AlertEvent, Kind, Member, Scope};

/// An alert's identity: rule name and scope.
pub type Key = (String, Scope);

/// One member alert of an incident.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Part {
    /// Its latest line.
    line: Alert,
    /// Models carrying its scope's traffic.
    links: Vec<String>,
}

/// The alerts of one cause.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Incident {
    /// The root alert's row id: the incident's id.
    pub id: i64,
    /// The root alert.
    pub root: Key,
    /// When the root's condition was first seen (data time), ms.
    pub started_ms: i64,
    #[serde(with = "super::state::pairs")]
    members: BTreeMap<Key, Part>,
    /// The most severe tier rank a team was told of (none yet: `None`).
    pub notified_rank: Option<u8>,
    /// When it was last notified (stage clock), ms.
    pub notified_ms: i64,
    /// Whether its resolve was already notified since its last notification.
    pub resolve_told: bool,
    /// The exception suppressing it (its root's), if any.
    pub suppressed_by: Option<i64>,
    /// How often it reopened.
    pub reopens: u32,
    /// When it resolved (data time); `None` while open.
    pub resolved_ms: Option<i64>,
}

/// Whether scope `inner` is `outer` or finer (carries all its labels).
fn within(outer: &Scope, inner: &Scope) -> bool {
    outer.iter().all(|(k, v)| inner.get(k) == Some(v))
}

/// Whether one scope contains the other (equal, parent or child).
pub fn nested(a: &Scope, b: &Scope) -> bool {
    within(a, b) || within(b, a)
}

/// Whether two scopes are parts of one story: nested, or one is a model that carries
/// the other's traffic (a route moved to model B explains model B's rise).
pub fn related(a: &Scope, a_links: &[String], b: &Scope, b_links: &[String]) -> bool {
    nested(a, b)
        || a.get("model").is_some_and(|m| b_links.contains(m))
        || b.get("model").is_some_and(|m| a_links.contains(m))
}

impl Incident {
    /// An incident opened by `line` (its root) on `key`.
    pub fn open(id: i64, key: Key, line: Alert, links: Vec<String>, started_ms: i64) -> Incident {
        Incident {
            id,
            root: key.clone(),
            started_ms,
            members: BTreeMap::from([(key, Part { line, links })]),
            notified_rank: None,
            notified_ms: i64::MIN,
            resolve_told: false,
            suppressed_by: None,
            reopens: 0,
            resolved_ms: None,
        }
    }

    /// The data time of its root's latest line.
    pub fn root_at(&self) -> i64 {
        self.members[&self.root].line.at_ms
    }

    /// Whether `key` has been part of it.
    pub fn has(&self, key: &Key) -> bool {
        self.members.contains_key(key)
    }

    /// Whether an alert on `key`, first seen at `started_ms`, whose scope's traffic
    /// goes to `links`, belongs here. Whenever it starts while the incident is open:
    /// the same rule on a member's scope, a finer or a coarser one (a parent carrying
    /// its child's excess), any rule on a member's own scope or within it (on
    /// global, only one of the same kind), or a quality or coverage finding on a scope related
    /// to a member's quality or coverage finding (the eval lane judges the same answers
    /// late and per scope: a route's answers are its model's when its traffic goes
    /// there, and a route whose evals stop changes its parent's mix of
    /// scores: global's mean score falls when its best-scored route goes unscored),
    /// or any finding on a model a member's routing shift sends traffic to (the
    /// model's cost and lengths move because its traffic changed).
    /// Otherwise only if it started within `window_ms` of the incident and is
    /// related to a member (a parent or child, or linked through traffic): an
    /// outage hours into a long-open incident is its own story.
    pub fn takes(
        &self,
        (key, kind): (&Key, Kind),
        started_ms: i64,
        links: &[String],
        window_ms: i64,
    ) -> bool {
        let close = (started_ms - self.started_ms).abs() <= window_ms;
        let about_answers = |k: Kind| {
            matches!(
                k,
                Kind::QualityDrift | Kind::EvalCoverageDrop | Kind::FalseEfficiency
            )
        };
        self.members.iter().any(|(k, p)| {
            let same_kind = p.line.kind == kind;
            (k.0 == key.0 && nested(&k.1, &key.1))
                || (!k.1.is_empty() && within(&k.1, &key.1))
                || (k.1 == key.1 && same_kind)
                || (about_answers(kind)
                    && about_answers(p.line.kind)
                    && related(&k.1, &p.links, &key.1, links))
                || (p.line.kind == Kind::RoutingShift
                    && key.1.get("model").is_some_and(|m| p.links.contains(m)))
                || (close && related(&k.1, &p.links, &key.1, links))
        })
    }

    /// Make `key` (a member) the root when it is a finer scope of the root's own
    /// finding: the smallest scope that carries the cause speaks for the incident,
    /// also when its parent fired first. But when siblings of one kind moved
    /// together (both providers failing) and their common parent is a member, the
    /// cause is wider than either: the parent speaks for it.
    pub fn reroot(&mut self, key: &Key) {
        let (root, Some(new)) = (&self.members[&self.root].line, self.members.get(key)) else {
            return;
        };
        let finer = key.1.len() > self.root.1.len() && nested(&key.1, &self.root.1);
        if finer && new.line.kind == root.kind && self.sibling_parent(key).is_none() {
            self.root = key.clone();
        }
        while let Some(parent) = self.sibling_parent(&self.root) {
            self.root = parent;
        }
    }

    /// A member of `key`'s kind on the common parent of `key`'s scope and a sibling
    /// member's (same labels, other values) of that kind.
    fn sibling_parent(&self, key: &Key) -> Option<Key> {
        let kind = self.members.get(key)?.line.kind;
        let same_kind = |k: &&Key| self.members[*k].line.kind == kind;
        self.members
            .keys()
            .filter(same_kind)
            .filter(|k| k.1 != key.1 && k.1.keys().eq(key.1.keys()))
            .find_map(|sibling| {
                let common: Scope = key
                    .1
                    .iter()
                    .filter(|(l, v)| sibling.1.get(*l) == Some(*v))
                    .map(|(l, v)| (l.clone(), v.clone()))
                    .collect();
                self.members
                    .keys()
                    .filter(same_kind)
                    .find(|k| k.1 == common)
                    .cloned()
            })
    }

    /// Record `line` as `key`'s latest (joining it if new).
    pub fn set(&mut self, key: Key, line: Alert, links: Vec<String>) {
        self.members.insert(key, Part { line, links });
    }

    /// The most severe tier rank among its members.
    pub fn rank(&self) -> u8 {
        self.members
            .values()
            .map(|p| p.line.tier_rank)
            .min()
            .unwrap_or(u8::MAX)
    }

    /// The line announcing a transition: the most severe member's latest line (the
    /// root's on a tie), so the headline is the harm a person must act on, with the
    /// other members listed.
    pub fn line(&self, event: AlertEvent, at_ms: i64) -> Alert {
        let root = &self.members[&self.root].line;
        let (head, top) = self
            .members
            .iter()
            .min_by_key(|(k, p)| (p.line.tier_rank, **k != self.root))
            .map(|(k, p)| (k, &p.line))
            .expect("an incident has its root");
        let mut line = top.clone();
        line.event = event;
        line.at_ms = at_ms;
        line.reopens = self.reopens;
        line.incident = Some(self.id);
        line.members = self
            .members
            .iter()
            .filter(|(k, _)| *k != head)
            .map(|(_, p)| Member {
                rule: p.line.rule.clone(),
                kind: p.line.kind,
                scope: p.line.scope.clone(),
                tier: p.line.tier.clone(),
                summary: p.line.summary.clone(),
            })
            .collect();
        if *head != self.root {
            if let Value::Object(ev) = &mut line.evidence {
                ev.insert(
                    "root".into(),
                    json!({"rule": root.rule, "kind": root.kind, "scope": root.scope}),
                );
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Lane;

    fn scope(pairs: &[(&str, &str)]) -> Scope {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn alert(rule: &str, scope: Scope, rank: u8) -> Alert {
        Alert {
            event: AlertEvent::Firing,
            rule: rule.into(),
            lane: Lane::Cost,
            kind: Kind::CostDrift,
            scope,
            at_ms: 0,
            tier: ["page", "alert", "digest", "record"][rank as usize - 1].into(),
            tier_rank: rank,
            summary: format!("{rule} moved"),
            evidence: json!({}),
            members: Vec::new(),
            reopens: 0,
            incident: None,
        }
    }

    fn links(models: &[&str]) -> Vec<String> {
        models.iter().map(|m| m.to_string()).collect()
    }

    #[test]
    fn a_route_moved_to_another_model_takes_that_model_and_its_provider_but_not_strangers() {
        let route = scope(&[("route", "extract")]);
        let key = ("prompt-length".to_string(), route.clone());
        let inc = Incident::open(
            1,
            key,
            alert("prompt-length", route, 3),
            links(&["gpt-4o", "gpt-4o-mini"]),
            0,
        );
        let window = 20 * 60_000;
        let model_b = (
            "traffic-volume".to_string(),
            scope(&[("model", "gpt-4o-mini")]),
        );
        assert!(inc.takes(
            (&model_b, Kind::CostDrift),
            10 * 60_000,
            &links(&["gpt-4o-mini"]),
            window
        ));
        // The provider is linked through a model both carry.
        let provider = (
            "traffic-volume".to_string(),
            scope(&[("provider", "openai")]),
        );
        assert!(!inc.takes((&provider, Kind::CostDrift), 0, &links(&["claude"]), window));
        let mut inc = inc;
        inc.set(
            model_b.clone(),
            alert("traffic-volume", model_b.1.clone(), 2),
            links(&["gpt-4o-mini"]),
        );
        assert!(inc.takes(
            (&provider, Kind::CostDrift),
            0,
            &links(&["gpt-4o-mini"]),
            window
        ));
        // Unrelated: another route whose traffic goes elsewhere.
        let other = ("cost-per-request".to_string(), scope(&[("route", "chat")]));
        assert!(!inc.takes((&other, Kind::CostDrift), 0, &links(&["claude"]), window));
        // Related but hours later on a new scope: its own incident.
        let late = ("error-rate".to_string(), scope(&[("model", "gpt-4o")]));
        assert!(!inc.takes(
            (&late, Kind::CostDrift),
            5 * 3_600_000,
            &links(&["gpt-4o"]),
            window
        ));
        // Hours later on a scope already in it: the same story.
        let again = ("eval-coverage".to_string(), scope(&[("route", "extract")]));
        assert!(inc.takes((&again, Kind::CostDrift), 5 * 3_600_000, &[], window));
        // Hours later on global: the same rule is its parent's share, another rule
        // is another story (an outage during a long-open incident).
        let parent = ("prompt-length".to_string(), Scope::new());
        assert!(inc.takes((&parent, Kind::CostDrift), 5 * 3_600_000, &[], window));
        let outage = ("error-rate".to_string(), Scope::new());
        assert!(!inc.takes((&outage, Kind::StructuralDrift), 5 * 3_600_000, &[], window));
        assert!(
            inc.takes((&outage, Kind::StructuralDrift), 10 * 60_000, &[], window),
            "close in time it is"
        );
        // Even once global is a member, a later outage on it is not taken.
        inc.set(
            parent.clone(),
            alert("prompt-length", Scope::new(), 3),
            vec![],
        );
        assert!(!inc.takes((&outage, Kind::StructuralDrift), 5 * 3_600_000, &[], window));
        let tenant = ("error-rate".to_string(), scope(&[("tenant", "t")]));
        assert!(!inc.takes((&tenant, Kind::StructuralDrift), 5 * 3_600_000, &[], window));
    }

    #[test]
    fn the_line_is_headed_by_the_most_severe_member_with_the_others_listed() {
        let route = scope(&[("route", "extract")]);
        let key = ("prompt-length".to_string(), route.clone());
        let mut inc = Incident::open(7, key, alert("prompt-length", route, 3), vec![], 0);
        let model = scope(&[("model", "b")]);
        inc.set(
            ("cost-per-request".into(), model.clone()),
            alert("cost-per-request", model.clone(), 2),
            vec![],
        );
        inc.reopens = 2;
        let line = inc.line(AlertEvent::Updated, 600_000);
        assert_eq!(
            line.rule, "cost-per-request",
            "the most severe member heads it"
        );
        assert_eq!((line.tier.as_str(), line.tier_rank), ("alert", 2));
        assert_eq!(line.event, AlertEvent::Updated);
        assert_eq!(line.reopens, 2);
        assert_eq!(line.members.len(), 1);
        assert_eq!(line.members[0].rule, "prompt-length");
        assert_eq!(line.evidence["root"]["rule"], "prompt-length");
        assert_eq!(inc.rank(), 2);
    }

    #[test]
    fn a_parents_score_falling_hours_into_a_routes_coverage_drop_is_the_same_story() {
        let route = scope(&[("route", "classify")]);
        let key = ("eval-coverage".to_string(), route.clone());
        let mut coverage = alert("eval-coverage", route, 1);
        coverage.kind = Kind::EvalCoverageDrop;
        let inc = Incident::open(1, key, coverage, vec![], 0);
        let later = 3 * 3_600_000;
        let score = ("eval-score".to_string(), Scope::new());
        assert!(inc.takes((&score, Kind::QualityDrift), later, &[], 30 * 60_000));
        // A failure hours later is another story.
        let errors = ("error-rate".to_string(), Scope::new());
        assert!(!inc.takes((&errors, Kind::StructuralDrift), later, &[], 30 * 60_000));
    }

    #[test]
    fn the_model_a_routes_unscored_answers_go_to_is_the_same_story_hours_later() {
        let route = scope(&[("route", "classify")]);
        let key = ("eval-coverage".to_string(), route.clone());
        let mut coverage = alert("eval-coverage", route, 1);
        coverage.kind = Kind::EvalCoverageDrop;
        let inc = Incident::open(1, key, coverage, links(&["gpt-4o-mini"]), 0);
        let later = 3 * 3_600_000;
        let window = 30 * 60_000;
        let mini = (
            "false-efficiency".to_string(),
            scope(&[("model", "gpt-4o-mini")]),
        );
        assert!(inc.takes((&mini, Kind::FalseEfficiency), later, &[], window));
        // Another model's answers, or the route's model's cost hours later, are not.
        let other = (
            "false-efficiency".to_string(),
            scope(&[("model", "gpt-4o")]),
        );
        assert!(!inc.takes((&other, Kind::FalseEfficiency), later, &[], window));
        let cost = (
            "cost-per-request".to_string(),
            scope(&[("model", "gpt-4o-mini")]),
        );
        assert!(!inc.takes((&cost, Kind::CostDrift), later, &[], window));
    }

    #[test]
    fn siblings_failing_together_are_headed_by_their_parent() {
        let openai = scope(&[("provider", "openai")]);
        let key = ("status-mix".to_string(), openai.clone());
        let mut inc = Incident::open(1, key.clone(), alert("status-mix", openai, 1), vec![], 0);
        let global = ("error-rate".to_string(), Scope::new());
        inc.set(global.clone(), alert("error-rate", Scope::new(), 1), vec![]);
        inc.reroot(&global);
        assert_eq!(
            inc.root, key,
            "one provider with global above it: still its own cause"
        );
        let anthropic = scope(&[("provider", "anthropic")]);
        let other = ("status-mix".to_string(), anthropic.clone());
        inc.set(other.clone(), alert("status-mix", anthropic, 2), vec![]);
        inc.reroot(&other);
        assert_eq!(inc.root, global, "both providers: the cause is global");
        assert_eq!(inc.line(AlertEvent::Updated, 0).rule, "error-rate");
        // A route's own finding under global stays the root when alone.
        let route = scope(&[("route", "extract")]);
        let rkey = ("prompt-length".to_string(), route.clone());
        let mut inc = Incident::open(2, rkey.clone(), alert("prompt-length", route, 2), vec![], 0);
        let top = ("prompt-length".to_string(), Scope::new());
        inc.set(top.clone(), alert("prompt-length", Scope::new(), 2), vec![]);
        inc.reroot(&top);
        assert_eq!(inc.root, rkey);
    }

    #[test]
    fn any_drift_within_a_members_scope_is_part_of_its_story_hours_later() {
        let route = scope(&[("route", "classify")]);
        let key = ("prompt-length".to_string(), route.clone());
        let inc = Incident::open(1, key, alert("prompt-length", route, 2), vec![], 0);
        let later = 7 * 3_600_000;
        let pair = (
            "cost-per-request".to_string(),
            scope(&[("model", "gpt-4o"), ("route", "classify")]),
        );
        assert!(inc.takes((&pair, Kind::CostDrift), later, &[], 30 * 60_000));
        // Another route's drift hours later is not.
        let other = (
            "cost-per-request".to_string(),
            scope(&[("model", "gpt-4o"), ("route", "chat")]),
        );
        assert!(!inc.takes((&other, Kind::CostDrift), later, &[], 30 * 60_000));
    }

    #[test]
    fn a_routing_shift_takes_its_models_findings_while_it_lasts() {
        let route = scope(&[("route", "extract")]);
        let key = ("routing-shift".to_string(), route.clone());
        let mut shift = alert("routing-shift", route, 2);
        shift.kind = Kind::RoutingShift;
        let inc = Incident::open(1, key, shift, links(&["gpt-4o-mini"]), 0);
        let later = 5 * 3_600_000;
        let mini = (
            "unannounced-step".to_string(),
            scope(&[("model", "gpt-4o-mini")]),
        );
        assert!(inc.takes((&mini, Kind::UnannouncedChange), later, &[], 30 * 60_000));
        let other = (
            "unannounced-step".to_string(),
            scope(&[("model", "gpt-4o")]),
        );
        assert!(!inc.takes((&other, Kind::UnannouncedChange), later, &[], 30 * 60_000));
    }
}
