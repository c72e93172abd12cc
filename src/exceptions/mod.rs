//! The exception registry: scoped, owned, reasoned permissions to not be notified of
//! a rule's alerts. Every exception expires (a maximum lifetime), renewals are
//! limited, every change is audited, and a suppressed alert is still recorded with
//! the exception's id. A rule that gathers exceptions, or whose firings are mostly
//! suppressed, raises `exception_creep`: the rule needs fixing, not more exceptions.
//!
//! The SQL is in `store::exceptions`; this module holds the policy.

use std::collections::{BTreeMap, HashMap};

use serde_json::json;

use crate::domain::{Alert, AlertEvent, Exception, Kind, Lane, SCOPE_DIMS, Scope, Tier};
use crate::store::StoreError;
use crate::store::exceptions::{self as sql, AuditEntry, NewException};
use crate::store::sql::{Sql, Transact};

/// The scope value that matches any value of its dimension.
pub const WILDCARD: &str = "*";

const DAY_MS: i64 = 86_400_000;
/// Firings suppressed above this share raise `exception_creep`.
const MAX_SUPPRESSED_SHARE: f64 = 0.5;
const MAX_TEXT_CHARS: usize = 1000;
const MAX_NAME_CHARS: usize = 200;

/// Limits from the config's `[exceptions]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Longest an exception may run ahead of now, at creation and at each renewal (days).
    pub max_lifetime_days: u32,
    /// Renewals allowed; the next one is refused.
    pub max_renewals: u32,
    /// More active exceptions than this on one rule raise `exception_creep`.
    pub max_active_per_rule: u32,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            max_lifetime_days: 14,
            max_renewals: 2,
            max_active_per_rule: 3,
        }
    }
}

impl Policy {
    fn max_lifetime_ms(&self) -> i64 {
        i64::from(self.max_lifetime_days) * DAY_MS
    }
}

/// Why a registry operation was refused. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum ExceptionError {
    /// The request is malformed or breaks a rule of the registry.
    #[error("{0}")]
    Invalid(String),
    /// No exception has this id.
    #[error("no exception {0}: list them with `driftwarden exceptions list --all`")]
    NotFound(i64),
    /// Renewing again is refused.
    #[error(
        "renewed {0} times already: fix the rule (loosen its threshold or scope) instead of renewing"
    )]
    RenewalLimit(u32),
    /// The exception was revoked; a revoked exception stays revoked.
    #[error("exception {0} was revoked; create a new one if it is still needed")]
    Revoked(i64),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An exception as created, with warnings about what it will not do.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// The stored exception.
    pub exception: Exception,
    /// For example: a wildcard never suppresses a rank-1 alert.
    pub warnings: Vec<String>,
}

/// A duration that is not a whole number of days, hours or minutes; the message says
/// how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDuration(String);

/// Parse a duration such as `7d`, `36h` or `90m` into milliseconds. Three units are
/// all an expiry needs, so this is not worth a dependency.
pub fn parse_duration(text: &str) -> Result<i64, InvalidDuration> {
    let text = text.trim();
    let unit_ms = match text.chars().last() {
        Some('d') => DAY_MS,
        Some('h') => 3_600_000,
        Some('m') => 60_000,
        _ => {
            return Err(InvalidDuration(format!(
                "duration {text:?} must be a number of days, hours or minutes, e.g. 7d, 36h, 90m"
            )));
        }
    };
    let n: i64 = text[..text.len() - 1]
        .parse()
        .ok()
        .filter(|n| *n > 0 && *n <= 3650 * DAY_MS / unit_ms)
        .ok_or_else(|| {
            InvalidDuration(format!(
                "duration {text:?} must be a positive whole number with a unit, e.g. 7d"
            ))
        })?;
    Ok(n * unit_ms)
}

/// Whether an exception's scope matcher covers an alert's scope. Every labelled
/// dimension must equal the alert's (`*`: the alert has the dimension, any value).
/// A rank-1 alert is covered only by a matcher naming its exact scope: no wildcard,
/// no dimension left out.
pub fn scope_matches(matcher: &Scope, scope: &Scope, tier_rank: u8) -> bool {
    if tier_rank <= 1 {
        return matcher == scope && !matcher.values().any(|v| v == WILDCARD);
    }
    matcher.iter().all(|(dim, want)| match scope.get(dim) {
        Some(have) => want == WILDCARD || want == have,
        None => false,
    })
}

/// The id of the oldest of the `active` exceptions that suppresses an alert of
/// `rule` in `scope` at `tier_rank`, if any: a wildcard never suppresses a rank-1
/// alert. The alert stage records the suppressed alert with this id and counts a hit.
pub fn covering(active: &[Exception], rule: &str, scope: &Scope, tier_rank: u8) -> Option<i64> {
    active
        .iter()
        .filter(|e| e.rule == rule && scope_matches(&e.scope, scope, tier_rank))
        .map(|e| e.id)
        .min()
}

/// Whether a matcher matches more than one exact scope.
fn is_wildcard(matcher: &Scope) -> bool {
    matcher.is_empty() || matcher.values().any(|v| v == WILDCARD)
}

fn check_text(field: &str, value: &str, max: usize, required: bool) -> Result<(), ExceptionError> {
    if required && value.trim().is_empty() {
        return Err(ExceptionError::Invalid(format!(
            "{field} is required and must not be empty"
        )));
    }
    if value.chars().count() > max {
        return Err(ExceptionError::Invalid(format!(
            "{field} is longer than {max} characters"
        )));
    }
    Ok(())
}

/// The registry's operations under one policy. The API and the alert stage each call
/// it on their own connection to the daemon's database (`store::exceptions::open`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Registry {
    policy: Policy,
}

impl Registry {
    /// A registry enforcing `policy`.
    pub fn new(policy: Policy) -> Registry {
        Registry { policy }
    }

    /// Validate and store a new exception, auditing `created` by `actor`.
    pub fn create(
        &self,
        conn: &mut impl Transact,
        new: NewException,
        actor: &str,
        now_ms: i64,
    ) -> Result<Created, ExceptionError> {
        check_text("rule", &new.rule, MAX_NAME_CHARS, true)?;
        check_text("reason", &new.reason, MAX_TEXT_CHARS, true)?;
        check_text("owner", &new.owner, MAX_NAME_CHARS, true)?;
        check_text(
            "ticket",
            new.ticket.as_deref().unwrap_or(""),
            MAX_NAME_CHARS,
            false,
        )?;
        for (dim, value) in &new.scope {
            if !SCOPE_DIMS.contains(&dim.as_str()) {
                return Err(ExceptionError::Invalid(format!(
                    "scope key {dim:?} is not one of {}",
                    SCOPE_DIMS.join(", ")
                )));
            }
            if value.trim().is_empty() || (value.contains('*') && value != WILDCARD) {
                return Err(ExceptionError::Invalid(format!(
                    "scope {dim}={value:?}: give an exact value, or * alone for any value"
                )));
            }
        }
        if new.expires_ms <= now_ms {
            return Err(ExceptionError::Invalid(
                "expires_at is not in the future: an exception must expire later than now".into(),
            ));
        }
        if new.expires_ms - now_ms > self.policy.max_lifetime_ms() {
            return Err(ExceptionError::Invalid(format!(
                "an exception may run at most {} days (max_lifetime_days); pick an earlier expiry and renew it if the fix takes longer",
                self.policy.max_lifetime_days
            )));
        }
        let mut warnings = Vec::new();
        if is_wildcard(&new.scope) {
            warnings.push(
                "this exception covers more than one exact scope (a * value or an empty scope): it never suppresses a rank-1 (top tier) alert; add one with the exact scope for that"
                    .to_string(),
            );
        }
        let exception = conn.write(|tx| {
            let e = sql::insert(tx, &new, now_ms)?;
            sql::audit(
                tx,
                e.id,
                now_ms,
                "created",
                actor,
                &json!({"rule": e.rule, "scope": e.scope, "reason": e.reason, "owner": e.owner, "ticket": e.ticket, "expires_ms": e.expires_ms}),
            )?;
            Ok::<_, ExceptionError>(e)
        })?;
        tracing::info!(id = exception.id, rule = %exception.rule, scope = ?exception.scope, owner = %exception.owner, expires_ms = exception.expires_ms, "exception created");
        Ok(Created {
            exception,
            warnings,
        })
    }

    /// Extend an exception by `extend_ms` from its expiry (or from now, if it has
    /// expired), within the maximum lifetime, counting one renewal. The renewal past
    /// `max_renewals` is refused.
    pub fn renew(
        &self,
        conn: &mut impl Transact,
        id: i64,
        extend_ms: i64,
        actor: &str,
        now_ms: i64,
    ) -> Result<Exception, ExceptionError> {
        let policy = self.policy;
        let renewed = conn.write(|tx| {
            let e = sql::get(tx, id)?.ok_or(ExceptionError::NotFound(id))?;
            if e.revoked_ms.is_some() {
                return Err(ExceptionError::Revoked(id));
            }
            if e.renewals >= policy.max_renewals {
                return Err(ExceptionError::RenewalLimit(e.renewals));
            }
            let expires_ms = e.expires_ms.max(now_ms).saturating_add(extend_ms);
            if expires_ms - now_ms > policy.max_lifetime_ms() {
                return Err(ExceptionError::Invalid(format!(
                    "renewed, it would expire more than {} days from now (max_lifetime_days); renew for less",
                    policy.max_lifetime_days
                )));
            }
            sql::set_expiry(tx, id, expires_ms, e.renewals + 1)?;
            sql::audit(
                tx,
                id,
                now_ms,
                "renewed",
                actor,
                &json!({"from_expires_ms": e.expires_ms, "expires_ms": expires_ms, "renewals": e.renewals + 1}),
            )?;
            sql::get(tx, id)?.ok_or(ExceptionError::NotFound(id))
        })?;
        tracing::info!(
            id,
            renewals = renewed.renewals,
            expires_ms = renewed.expires_ms,
            "exception renewed"
        );
        Ok(renewed)
    }

    /// Revoke an exception now: matching alerts are notified again.
    pub fn revoke(
        &self,
        conn: &mut impl Transact,
        id: i64,
        actor: &str,
        now_ms: i64,
    ) -> Result<Exception, ExceptionError> {
        let revoked = conn.write(|tx| {
            let e = sql::get(tx, id)?.ok_or(ExceptionError::NotFound(id))?;
            if e.revoked_ms.is_some() {
                return Err(ExceptionError::Revoked(id));
            }
            sql::set_revoked(tx, id, now_ms)?;
            sql::audit(tx, id, now_ms, "revoked", actor, &json!({"hits": e.hits}))?;
            sql::get(tx, id)?.ok_or(ExceptionError::NotFound(id))
        })?;
        tracing::info!(id, rule = %revoked.rule, "exception revoked");
        Ok(revoked)
    }

    /// Every exception, newest first, or only those active at `now_ms`.
    pub fn list(
        &self,
        conn: &(impl Sql + ?Sized),
        active_only: bool,
        now_ms: i64,
    ) -> Result<Vec<Exception>, ExceptionError> {
        Ok(sql::list(conn, active_only.then_some(now_ms))?)
    }

    /// The audit log of one exception, oldest first.
    pub fn audit(
        &self,
        conn: &(impl Sql + ?Sized),
        id: i64,
    ) -> Result<Vec<AuditEntry>, ExceptionError> {
        sql::get(conn, id)?.ok_or(ExceptionError::NotFound(id))?;
        Ok(sql::audit_log(conn, id)?)
    }

    /// The exceptions active at `now_ms` (neither expired nor revoked), for
    /// [`covering`].
    pub fn active(
        &self,
        conn: &(impl Sql + ?Sized),
        now_ms: i64,
    ) -> Result<Vec<Exception>, ExceptionError> {
        Ok(sql::list(conn, Some(now_ms))?)
    }

    /// Count one alert suppressed by exception `id`.
    pub fn record_hit(
        &self,
        conn: &(impl Sql + ?Sized),
        id: i64,
        now_ms: i64,
    ) -> Result<(), ExceptionError> {
        Ok(sql::add_hit(conn, id, now_ms)?)
    }

    /// Exceptions that expired since the last sweep, each audited `expired` once.
    pub fn sweep_expired(
        &self,
        conn: &mut impl Transact,
        now_ms: i64,
    ) -> Result<Vec<Exception>, ExceptionError> {
        let expired = conn.write(|tx| {
            let expired = sql::mark_expired(tx, now_ms)?;
            for e in &expired {
                sql::audit(
                    tx,
                    e.id,
                    now_ms,
                    "expired",
                    "daemon",
                    &json!({"expires_ms": e.expires_ms, "hits": e.hits}),
                )?;
            }
            Ok::<_, ExceptionError>(expired)
        })?;
        for e in &expired {
            tracing::info!(id = e.id, rule = %e.rule, hits = e.hits, "exception expired");
        }
        Ok(expired)
    }

    /// `exception_creep` meta-alerts, in `tier` (`Tiers::meta_tier`), one per rule that
    /// has more than `max_active_per_rule` active exceptions or more than half of its
    /// firings suppressed (`suppressed_share_by_rule`, from the alert stage's window).
    pub fn creep(
        &self,
        conn: &(impl Sql + ?Sized),
        now_ms: i64,
        suppressed_share_by_rule: &HashMap<String, f64>,
        tier: &Tier,
    ) -> Result<Vec<Alert>, ExceptionError> {
        let mut rules: BTreeMap<String, (Vec<i64>, Option<f64>)> =
            sql::active_by_rule(conn, now_ms)?
                .into_iter()
                .map(|(rule, ids)| (rule, (ids, None)))
                .collect();
        for (rule, share) in suppressed_share_by_rule {
            rules.entry(rule.clone()).or_default().1 = Some(*share);
        }
        let max_active = self.policy.max_active_per_rule as usize;
        let alerts = rules
            .into_iter()
            .filter_map(|(rule, (ids, share))| {
                let too_many = ids.len() > max_active;
                let mostly_suppressed = share.is_some_and(|s| s > MAX_SUPPRESSED_SHARE);
                if !too_many && !mostly_suppressed {
                    return None;
                }
                let mut why = Vec::new();
                if too_many {
                    why.push(format!(
                        "{} active exceptions (more than {max_active})",
                        ids.len()
                    ));
                }
                if let Some(s) = share.filter(|_| mostly_suppressed) {
                    why.push(format!("{:.0}% of its firings suppressed", s * 100.0));
                }
                Some(Alert {
                    event: AlertEvent::Firing,
                    members: Vec::new(),
                    reopens: 0,
                    incident: None,
                    rule: Kind::ExceptionCreep.as_str().to_string(),
                    lane: Lane::Meta,
                    kind: Kind::ExceptionCreep,
                    scope: [("rule".to_string(), rule.clone())].into(),
                    at_ms: now_ms,
                    tier: tier.name.clone(),
                    tier_rank: tier.rank,
                    summary: format!(
                        "rule {rule} has {}: fix the rule (its threshold or scope) instead of excepting it",
                        why.join(" and ")
                    ),
                    evidence: json!({
                        "active_exceptions": ids.len(),
                        "max_active_per_rule": max_active,
                        "exception_ids": ids,
                        "suppressed_share": share,
                        "max_suppressed_share": MAX_SUPPRESSED_SHARE,
                    }),
                })
            })
            .collect();
        Ok(alerts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    const NOW: i64 = 1_780_704_000_000;

    fn scope(pairs: &[(&str, &str)]) -> Scope {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn new(rule: &str, pairs: &[(&str, &str)], days: i64) -> NewException {
        NewException {
            rule: rule.into(),
            scope: scope(pairs),
            reason: "known batch job".into(),
            owner: "ana".into(),
            ticket: Some("OPS-1".into()),
            expires_ms: NOW + days * DAY_MS,
        }
    }

    fn db() -> (tempfile::TempDir, crate::store::sql::Db) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(Store::open(&path).unwrap());
        let conn = sql::open(&path.as_path().into()).unwrap();
        (dir, conn)
    }

    fn actions(r: &Registry, conn: &(impl Sql + ?Sized), id: i64) -> Vec<String> {
        r.audit(conn, id)
            .unwrap()
            .into_iter()
            .map(|a| a.action)
            .collect()
    }

    #[test]
    fn scopes_match_by_labelled_dimensions_and_wildcards() {
        let alert = scope(&[("model", "gpt-4o"), ("route", "chat")]);
        assert!(scope_matches(&scope(&[("model", "gpt-4o")]), &alert, 2));
        assert!(scope_matches(&scope(&[("route", "*")]), &alert, 3));
        assert!(scope_matches(&scope(&[]), &alert, 2));
        assert!(!scope_matches(
            &scope(&[("model", "gpt-4o-mini")]),
            &alert,
            2
        ));
        assert!(
            !scope_matches(&scope(&[("tenant", "*")]), &alert, 2),
            "* needs the dimension"
        );
        assert!(
            scope_matches(&alert, &alert, 1),
            "the exact scope covers a rank-1 alert"
        );
        assert!(!scope_matches(
            &scope(&[("model", "gpt-4o"), ("route", "*")]),
            &alert,
            1
        ));
        assert!(!scope_matches(&scope(&[("model", "gpt-4o")]), &alert, 1));
    }

    #[test]
    fn matching_respects_rule_expiry_revocation_and_rank() {
        let (_d, mut conn) = db();
        let r = Registry::default();
        let exact = r
            .create(&mut conn, new("cpr", &[("model", "gpt-4o")], 2), "ana", NOW)
            .unwrap();
        assert!(exact.warnings.is_empty());
        let wild = r
            .create(&mut conn, new("err", &[("model", "*")], 2), "ana", NOW)
            .unwrap();
        assert!(wild.warnings[0].contains("never suppresses a rank-1"));
        let alert = scope(&[("model", "gpt-4o")]);
        let id = exact.exception.id;
        assert_eq!(
            covering(&r.active(&conn, NOW).unwrap(), "cpr", &alert, 1),
            Some(id)
        );
        assert_eq!(
            covering(&r.active(&conn, NOW).unwrap(), "other", &alert, 2),
            None
        );
        assert_eq!(
            covering(&r.active(&conn, NOW).unwrap(), "err", &alert, 2),
            Some(wild.exception.id)
        );
        assert_eq!(
            covering(&r.active(&conn, NOW).unwrap(), "err", &alert, 1),
            None
        );

        r.record_hit(&conn, id, NOW + 5).unwrap();
        r.record_hit(&conn, id, NOW + 9).unwrap();
        let e = sql::get(&conn, id).unwrap().unwrap();
        assert_eq!((e.hits, e.last_hit_ms), (2, Some(NOW + 9)));

        let later = NOW + 2 * DAY_MS;
        assert_eq!(
            covering(&r.active(&conn, later).unwrap(), "cpr", &alert, 2),
            None,
            "expired by itself"
        );
        let swept = r.sweep_expired(&mut conn, later).unwrap();
        assert_eq!(swept.len(), 2);
        assert!(
            r.sweep_expired(&mut conn, later + 1).unwrap().is_empty(),
            "audited once"
        );
        assert_eq!(actions(&r, &conn, id), ["created", "expired"]);

        r.revoke(&mut conn, wild.exception.id, "bob", later)
            .unwrap();
        assert!(matches!(
            r.revoke(&mut conn, wild.exception.id, "bob", later),
            Err(ExceptionError::Revoked(_))
        ));
        assert!(matches!(
            r.revoke(&mut conn, 999, "bob", later),
            Err(ExceptionError::NotFound(999))
        ));
        assert!(r.list(&conn, true, later).unwrap().is_empty());
        assert_eq!(r.list(&conn, false, later).unwrap().len(), 2);
    }

    #[test]
    fn lifetime_and_renewals_are_limited() {
        let (_d, mut conn) = db();
        let r = Registry::default();
        let err = r
            .create(&mut conn, new("cpr", &[], 15), "ana", NOW)
            .unwrap_err();
        assert!(err.to_string().contains("at most 14 days"), "{err}");
        let err = r
            .create(&mut conn, new("cpr", &[], 0), "ana", NOW)
            .unwrap_err();
        assert!(err.to_string().contains("not in the future"), "{err}");
        for (pairs, want) in [
            (&[("region", "eu")][..], "not one of model"),
            (&[("model", "gpt-*")][..], "* alone"),
        ] {
            let err = r
                .create(&mut conn, new("cpr", pairs, 1), "ana", NOW)
                .unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
        let mut blank = new("cpr", &[], 1);
        blank.owner = " ".into();
        assert!(
            r.create(&mut conn, blank, "ana", NOW)
                .unwrap_err()
                .to_string()
                .contains("owner is required")
        );

        let id = r
            .create(&mut conn, new("cpr", &[], 7), "ana", NOW)
            .unwrap()
            .exception
            .id;
        let too_far = r.renew(&mut conn, id, 8 * DAY_MS, "ana", NOW).unwrap_err();
        assert!(
            too_far.to_string().contains("more than 14 days"),
            "{too_far}"
        );
        let e = r.renew(&mut conn, id, 7 * DAY_MS, "ana", NOW).unwrap();
        assert_eq!((e.renewals, e.expires_ms), (1, NOW + 14 * DAY_MS));
        let after_expiry = NOW + 20 * DAY_MS;
        let e = r.renew(&mut conn, id, DAY_MS, "ana", after_expiry).unwrap();
        assert_eq!(
            (e.renewals, e.expires_ms),
            (2, after_expiry + DAY_MS),
            "an expired exception renews from now"
        );
        let refused = r
            .renew(&mut conn, id, DAY_MS, "ana", after_expiry)
            .unwrap_err();
        assert!(matches!(refused, ExceptionError::RenewalLimit(2)));
        assert!(
            refused
                .to_string()
                .contains("renewed 2 times already: fix the rule")
        );
        assert_eq!(actions(&r, &conn, id), ["created", "renewed", "renewed"]);
    }

    #[test]
    fn creep_flags_rules_with_many_exceptions_or_mostly_suppressed() {
        let (_d, mut conn) = db();
        let r = Registry::new(Policy {
            max_active_per_rule: 2,
            ..Policy::default()
        });
        for model in ["a", "b", "c"] {
            r.create(
                &mut conn,
                new("crowded", &[("model", model)], 3),
                "ana",
                NOW,
            )
            .unwrap();
        }
        r.create(&mut conn, new("fine", &[("model", "a")], 3), "ana", NOW)
            .unwrap();
        let shares = HashMap::from([("quiet".to_string(), 0.8), ("fine".to_string(), 0.5)]);
        let tier = Tier {
            name: "alert".into(),
            rank: 2,
            channels: vec![],
        };
        let alerts = r.creep(&conn, NOW, &shares, &tier).unwrap();
        let rules: Vec<_> = alerts.iter().map(|a| a.scope["rule"].as_str()).collect();
        assert_eq!(rules, ["crowded", "quiet"]);
        assert!(
            alerts.iter().all(|a| a.kind == Kind::ExceptionCreep
                && a.lane == Lane::Meta
                && a.tier_rank == 2)
        );
        assert!(
            alerts[0]
                .summary
                .contains("3 active exceptions (more than 2)"),
            "{}",
            alerts[0].summary
        );
        assert!(
            alerts[1].summary.contains("80% of its firings suppressed"),
            "{}",
            alerts[1].summary
        );
        assert!(
            r.creep(&conn, NOW + 4 * DAY_MS, &HashMap::new(), &tier)
                .unwrap()
                .is_empty(),
            "expired ones do not count"
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("7d"), Ok(7 * DAY_MS));
        assert_eq!(parse_duration("36h"), Ok(36 * 3_600_000));
        assert_eq!(parse_duration("90m"), Ok(90 * 60_000));
        for bad in ["7", "d", "-1d", "0h", "1.5d", "7w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
