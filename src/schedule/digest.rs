//! The daily digest: one informational message for the past 24 hours, built from the
//! store — the digest tier's alerts, change events with their impact reports, the
//! exceptions by hits and age, and spend by model, route and tenant split into
//! volume, mix and rate effects against the day before.

use chrono::DateTime;

use crate::domain::{Exception, Message, Scope, rfc3339_ms, scope_label};
use crate::store::alerts::{AlertFilter, AlertRow};
use crate::store::queries::{self, StoredChange};
use crate::store::spend::{self, ScopeTotal};
use crate::store::sql::Db;
use crate::store::{Location, StoreError};
use crate::tiers::TierDef;

const DAY_MS: i64 = 86_400_000;
const DAY_MINUTES: i64 = 1440;
/// Most alerts and changes one digest lists; a busier day says how many more.
const MAX_ROWS: u32 = 200;
/// Values listed per dimension in the spend section, biggest spend first.
const TOP_VALUES: usize = 10;
/// The dimensions whose spend the digest splits, after the global total.
const SPEND_DIMS: [&str; 3] = ["model", "route", "tenant"];

/// A scope's spend over the day against the day before, split into effects that add
/// up to the change.
///
/// With `N` requests, `C` spend and `c = C / N` the cost per request, `0` the day
/// before and `1` the day:
///
/// ```text
/// C1 − C0 = (N1 − N0)·c0        volume: the requests added or lost, at the old unit cost
///         +  N1·(c1 − c0)        rate:   today's requests, at the change of unit cost
/// ```
///
/// The global scope splits its unit cost over models `m`, with shares `s_m = N_m / N`
/// and unit costs `c_m`, so that `c = Σ s_m·c_m`:
///
/// ```text
/// C1 − C0 = (N1 − N0)·c0                  volume
///         +  N1·Σ_m (s1_m − s0_m)·c0_m     mix:  traffic moved between models
///         +  Σ_m N1_m·(c1_m − c0_m)        rate: each model's unit cost moved
/// ```
///
/// Both identities are exact. A scope (or model) with no requests the day before
/// takes today's unit cost as its old one (`c0 = c1`): new traffic is volume (mix,
/// for a model), not a rate change. Spend counts the requests whose cost is known;
/// `N` counts every request.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// `global`, `model`, `route` or `tenant`.
    pub dim: String,
    /// The dimension's value; empty for `global`.
    pub value: String,
    /// Requests the day before (`N0`).
    pub requests_before: u64,
    /// Requests over the day (`N1`).
    pub requests: u64,
    /// Spend the day before, USD (`C0`).
    pub spend_before: f64,
    /// Spend over the day, USD (`C1`).
    pub spend: f64,
    /// Volume effect, USD.
    pub volume: f64,
    /// Mix effect across models, USD (global scope only; 0 elsewhere).
    pub mix: f64,
    /// Unit-rate effect, USD.
    pub rate: f64,
}

/// The day's spend: the global split first, then each dimension's values.
#[derive(Debug, Clone, PartialEq)]
pub struct Spend {
    /// The global scope, with the mix effect across models.
    pub global: Split,
    /// Per dimension (`model`, `route`, `tenant`), every value, biggest spend first.
    pub by_dim: Vec<(String, Vec<Split>)>,
}

fn unit(requests: u64, spend: f64) -> Option<f64> {
    (requests > 0).then(|| spend / requests as f64)
}

fn volume_rate(dim: &str, value: &str, before: (u64, f64), after: (u64, f64)) -> Split {
    let (n0, s0) = before;
    let (n1, s1) = after;
    let c1 = unit(n1, s1).unwrap_or(0.0);
    let c0 = unit(n0, s0).unwrap_or(c1);
    Split {
        dim: dim.to_string(),
        value: value.to_string(),
        requests_before: n0,
        requests: n1,
        spend_before: s0,
        spend: s1,
        volume: (n1 as f64 - n0 as f64) * c0,
        mix: 0.0,
        rate: n1 as f64 * (c1 - c0),
    }
}

/// Split the spend of each scope between two days' totals (see `Split`). The global
/// scope is the sum over models, so its three effects add up exactly.
pub fn split(before: &[ScopeTotal], after: &[ScopeTotal]) -> Spend {
    let get = |rows: &[ScopeTotal], dim: &str, value: &str| {
        rows.iter()
            .find(|t| t.dim == dim && t.value == value)
            .map_or((0, 0.0), |t| (t.requests, t.cost_usd))
    };
    let mut by_dim = Vec::new();
    for dim in SPEND_DIMS {
        let mut values: Vec<&str> = before
            .iter()
            .chain(after)
            .filter(|t| t.dim == dim)
            .map(|t| t.value.as_str())
            .collect();
        values.sort_unstable();
        values.dedup();
        let mut splits: Vec<Split> = values
            .into_iter()
            .map(|v| volume_rate(dim, v, get(before, dim, v), get(after, dim, v)))
            .collect();
        splits.sort_by(|a, b| {
            b.spend
                .max(b.spend_before)
                .total_cmp(&a.spend.max(a.spend_before))
                .then_with(|| a.value.cmp(&b.value))
        });
        by_dim.push((dim.to_string(), splits));
    }
    let models = &by_dim[0].1;
    let total = |f: fn(&Split) -> (u64, f64)| {
        models
            .iter()
            .map(f)
            .fold((0u64, 0.0), |(n, s), (dn, ds)| (n + dn, s + ds))
    };
    let (n0, s0) = total(|m| (m.requests_before, m.spend_before));
    let (n1, s1) = total(|m| (m.requests, m.spend));
    // A first day of traffic is all volume, like a new scope's.
    let mut global = volume_rate("global", "", (n0, s0), (n1, s1));
    if n0 > 0 {
        let share = |n: u64, total: u64| {
            if total == 0 {
                0.0
            } else {
                n as f64 / total as f64
            }
        };
        let (mut mix, mut rate) = (0.0, 0.0);
        for m in models {
            let c1m = unit(m.requests, m.spend).unwrap_or(0.0);
            let c0m = unit(m.requests_before, m.spend_before).unwrap_or(c1m);
            mix += n1 as f64 * (share(m.requests, n1) - share(m.requests_before, n0)) * c0m;
            rate += m.requests as f64 * (c1m - c0m);
        }
        global.mix = mix;
        global.rate = rate;
    }
    Spend { global, by_dim }
}

/// Everything one digest says.
#[derive(Debug, Clone)]
pub struct Digest {
    /// End of the day covered (the fire time), ms since the Unix epoch.
    pub to_ms: i64,
    /// Start of the day covered, 24 hours earlier.
    pub from_ms: i64,
    /// The digest tier's name.
    pub tier: String,
    /// Alerts of the digest tier started over the day, newest first.
    pub alerts: Vec<AlertRow>,
    /// Change events over the day, newest first, with their impact reports.
    pub changes: Vec<StoredChange>,
    /// Exceptions active at the end of the day or expired during it, most hits first,
    /// then oldest first.
    pub exceptions: Vec<Exception>,
    /// Spend by scope against the day before.
    pub spend: Spend,
}

impl Digest {
    /// Build the digest of the 24 hours before `now_ms` from the store at `db`, with
    /// the alerts of the tier named `tier`.
    pub fn build(db: &Location, tier: &str, now_ms: i64) -> Result<Digest, StoreError> {
        let from_ms = now_ms - DAY_MS;
        let conn = db.reader()?;
        let alerts = crate::store::alerts::list(
            &conn,
            &AlertFilter {
                tier: Some(tier.to_string()),
                since_ms: Some(from_ms),
                limit: MAX_ROWS,
                ..AlertFilter::default()
            },
        )?;
        let changes = queries::changes(&conn, from_ms, MAX_ROWS)?
            .into_iter()
            .filter(|c| c.ts_ms < now_ms)
            .collect();
        let mut exceptions: Vec<Exception> = crate::store::exceptions::list(&conn, None)?
            .into_iter()
            .filter(|e| e.revoked_ms.is_none() && e.created_ms < now_ms && e.expires_ms > from_ms)
            .collect();
        exceptions.sort_by(|a, b| b.hits.cmp(&a.hits).then(a.created_ms.cmp(&b.created_ms)));
        let to_minute = now_ms.div_euclid(60_000);
        let day = spend::totals(&conn, &SPEND_DIMS, to_minute - DAY_MINUTES, to_minute)?;
        let before = spend::totals(
            &conn,
            &SPEND_DIMS,
            to_minute - 2 * DAY_MINUTES,
            to_minute - DAY_MINUTES,
        )?;
        Ok(Digest {
            to_ms: now_ms,
            from_ms,
            tier: tier.to_string(),
            alerts,
            changes,
            exceptions,
            spend: split(&before, &day),
        })
    }

    /// The digest as a notification: title `driftwarden daily digest <date>`.
    pub fn message(&self) -> Message {
        let date = DateTime::from_timestamp_millis(self.to_ms)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        Message {
            title: format!("driftwarden daily digest {date}"),
            tier: Some(self.tier.clone()),
            alerts: Vec::new(),
            text: self.text(),
        }
    }

    /// The digest as readable plain text.
    pub fn text(&self) -> String {
        let mut out = format!(
            "The 24 hours from {} to {}.\n",
            rfc3339_ms::format(self.from_ms),
            rfc3339_ms::format(self.to_ms)
        );
        self.alerts_text(&mut out);
        self.changes_text(&mut out);
        self.exceptions_text(&mut out);
        self.spend_text(&mut out);
        out
    }

    fn alerts_text(&self, out: &mut String) {
        out.push_str(&format!(
            "\n{} alerts ({})\n",
            capitalized(&self.tier),
            self.alerts.len()
        ));
        if self.alerts.is_empty() {
            out.push_str("  none\n");
        }
        for a in &self.alerts {
            let suppressed = a
                .suppressed_by
                .map(|id| format!(" [suppressed by exception #{id}]"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {} {} · {} on {} since {}{suppressed}\n    {}\n",
                a.state.to_uppercase(),
                a.rule,
                a.kind,
                scope_label(&a.scope),
                a.started_at,
                a.summary
            ));
        }
    }

    fn changes_text(&self, out: &mut String) {
        out.push_str(&format!("\nChanges ({})\n", self.changes.len()));
        if self.changes.is_empty() {
            out.push_str("  none\n");
        }
        for c in &self.changes {
            let scope: Scope = serde_json::from_value(c.scope.clone()).unwrap_or_default();
            let note = if c.note.is_empty() {
                String::new()
            } else {
                format!(": {}", c.note)
            };
            out.push_str(&format!(
                "  {} {} at {} ({}){note}\n",
                c.kind,
                scope_label(&scope),
                rfc3339_ms::format(c.ts_ms),
                c.origin
            ));
            let summary = c
                .impact
                .as_ref()
                .and_then(|i| i.get("summary"))
                .and_then(|s| s.as_str());
            match summary {
                Some(s) => out.push_str(&format!("    impact: {s}\n")),
                None => out.push_str("    impact: report pending (warm-up not over)\n"),
            }
        }
    }

    fn exceptions_text(&self, out: &mut String) {
        out.push_str(&format!(
            "\nExceptions ({}, most hits first)\n",
            self.exceptions.len()
        ));
        if self.exceptions.is_empty() {
            out.push_str("  none\n");
        }
        for e in &self.exceptions {
            let expiry = if e.expires_ms <= self.to_ms {
                format!("expired {}", rfc3339_ms::format(e.expires_ms))
            } else {
                format!(
                    "expires {} (in {})",
                    rfc3339_ms::format(e.expires_ms),
                    days(e.expires_ms - self.to_ms)
                )
            };
            out.push_str(&format!(
                "  #{} {} on {}: {} hit{}, age {}, {expiry}, owner {}\n    {}\n",
                e.id,
                e.rule,
                scope_label(&e.scope),
                e.hits,
                if e.hits == 1 { "" } else { "s" },
                days(self.to_ms - e.created_ms),
                e.owner,
                e.reason
            ));
        }
    }

    fn spend_text(&self, out: &mut String) {
        let g = &self.spend.global;
        out.push_str("\nSpend (against the day before)\n");
        if g.requests == 0 && g.requests_before == 0 {
            out.push_str("  no traffic on either day\n");
            return;
        }
        out.push_str(&format!(
            "  global {} (was {}), {} requests (was {}): {} = volume {}, mix {}, rate {}\n",
            usd(g.spend),
            usd(g.spend_before),
            g.requests,
            g.requests_before,
            signed(g.spend - g.spend_before),
            signed(g.volume),
            signed(g.mix),
            signed(g.rate)
        ));
        for (dim, splits) in &self.spend.by_dim {
            out.push_str(&format!("  by {dim}\n"));
            if splits.is_empty() {
                out.push_str("    no traffic\n");
            }
            for s in splits.iter().take(TOP_VALUES) {
                out.push_str(&format!(
                    "    {} {} (was {}), {} requests (was {}): {} = volume {}, rate {}\n",
                    s.value,
                    usd(s.spend),
                    usd(s.spend_before),
                    s.requests,
                    s.requests_before,
                    signed(s.spend - s.spend_before),
                    signed(s.volume),
                    signed(s.rate)
                ));
            }
            if splits.len() > TOP_VALUES {
                out.push_str(&format!("    and {} more\n", splits.len() - TOP_VALUES));
            }
        }
    }
}

/// Queue `message` for every channel of `tier` on `conn` (fenced on a leader), all or
/// none; returns how many.
pub fn enqueue(
    conn: &mut Db,
    tier: &TierDef,
    message: &Message,
    now_ms: i64,
) -> Result<usize, StoreError> {
    use crate::store::sql::Transact;
    conn.write(|tx| {
        for channel in &tier.tier.channels {
            crate::store::outbox::enqueue(tx, channel, message, now_ms)?;
        }
        Ok(tier.tier.channels.len())
    })
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn days(ms: i64) -> String {
    format!("{:.1}d", ms as f64 / DAY_MS as f64)
}

/// Dollars with cents, or four decimals below a dollar (small scopes spend cents).
fn usd(x: f64) -> String {
    if x.abs() >= 1.0 {
        format!("${x:.2}")
    } else {
        format!("${x:.4}")
    }
}

fn signed(x: f64) -> String {
    let sign = if x < 0.0 { "-" } else { "+" };
    format!("{sign}{}", usd(x.abs()))
}

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, params};
    use serde_json::json;

    use super::*;
    use crate::domain::{ChangeEvent, ChangeKind};
    use crate::store::Store;
    use crate::store::exceptions::NewException;
    use crate::tiers::Tiers;

    /// 2026-06-07T09:00:00Z, a digest's default fire time.
    const NOW: i64 = 1_780_822_800_000;
    const HOUR: i64 = 3_600_000;

    fn store() -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        drop(Store::open(&path).unwrap());
        let conn = crate::store::open_side(&path).unwrap();
        (dir, path, conn)
    }

    /// One `agg_minute` cell with only requests and spend.
    fn agg(conn: &Connection, minute: i64, dim: &str, value: &str, requests: i64, cost: f64) {
        conn.execute(
            "INSERT INTO agg_minute (minute, dim, value, requests, errors, truncated, prompt_tokens, \
             completion_tokens, cached_tokens, cost_usd, costed_requests, list_cost_usd, \
             latency_ms_sum, latency_count) VALUES (?1, ?2, ?3, ?4, 0, 0, 0, 0, 0, ?5, ?4, 0, 0, 0)",
            params![minute, dim, value, requests, cost],
        )
        .unwrap();
    }

    fn close(got: f64, want: f64, what: &str) {
        assert!((got - want).abs() < 1e-9, "{what}: got {got}, want {want}");
    }

    #[test]
    fn spend_splits_into_volume_mix_and_rate() {
        let (_dir, path, conn) = store();
        let to = NOW / 60_000;
        let (day, before) = (to - DAY_MINUTES, to - 2 * DAY_MINUTES);
        // The day before: a 100 requests at $0.01, b 100 at $0.02 (a in two minutes).
        agg(&conn, before + 10, "model", "a", 60, 0.60);
        agg(&conn, before + 700, "model", "a", 40, 0.40);
        agg(&conn, before + 20, "model", "b", 100, 2.00);
        // The day: a unchanged, b doubles its traffic and costs $0.024 a request.
        agg(&conn, day + 5, "model", "a", 100, 1.00);
        agg(&conn, day + 900, "model", "b", 200, 4.80);
        agg(&conn, before + 30, "route", "chat", 100, 1.50);
        agg(&conn, day + 30, "route", "chat", 150, 3.00);
        agg(&conn, before + 40, "tenant", "team-a", 50, 1.00);
        agg(&conn, day + 40, "tenant", "team-b", 20, 0.40);
        // Outside both days: ignored.
        agg(&conn, before - 1, "model", "a", 1000, 100.0);
        agg(&conn, to, "model", "b", 1000, 100.0);

        let digest = Digest::build(&path.as_path().into(), "digest", NOW).unwrap();
        let spend = &digest.spend;
        let g = &spend.global;
        assert_eq!((g.requests_before, g.requests), (200, 300));
        close(g.spend_before, 3.00, "C0");
        close(g.spend, 5.80, "C1");
        // (300 − 200) · $0.015
        close(g.volume, 1.50, "global volume");
        // 300 · ((1/3 − 1/2) · $0.01 + (2/3 − 1/2) · $0.02)
        close(g.mix, 0.50, "global mix");
        // 100 · ($0.01 − $0.01) + 200 · ($0.024 − $0.02)
        close(g.rate, 0.80, "global rate");
        close(g.volume + g.mix + g.rate, g.spend - g.spend_before, "sum");

        let dim = |name: &str| &spend.by_dim.iter().find(|(d, _)| d == name).unwrap().1;
        let models = dim("model");
        assert_eq!(
            models.iter().map(|s| s.value.as_str()).collect::<Vec<_>>(),
            ["b", "a"],
            "biggest spend first"
        );
        close(models[0].volume, 2.00, "b volume: (200 − 100) · $0.02");
        close(models[0].rate, 0.80, "b rate: 200 · $0.004");
        close(models[1].volume + models[1].rate, 0.0, "a unchanged");
        assert_eq!(models[0].mix, 0.0, "mix is the global scope's");
        let chat = &dim("route")[0];
        close(chat.volume, 0.75, "chat volume: 50 · $0.015");
        close(chat.rate, 0.75, "chat rate: 150 · $0.005");
        let tenants = dim("tenant");
        close(tenants[0].volume, -1.00, "team-a left: all volume");
        close(tenants[1].volume, 0.40, "team-b is new: all volume");
        close(
            tenants[0].rate + tenants[1].rate,
            0.0,
            "no rate for new or gone",
        );

        let text = digest.text();
        for want in [
            "global $5.80 (was $3.00), 300 requests (was 200): +$2.80 = volume +$1.50, mix +$0.5000, rate +$0.8000",
            "    b $4.80 (was $2.00), 200 requests (was 100): +$2.80 = volume +$2.00, rate +$0.8000",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
    }

    #[test]
    fn a_first_day_of_traffic_is_all_volume() {
        let after = [ScopeTotal {
            dim: "model".into(),
            value: "a".into(),
            requests: 10,
            cost_usd: 0.5,
        }];
        let g = split(&[], &after).global;
        close(g.volume, 0.5, "volume");
        close(g.mix + g.rate, 0.0, "no mix or rate");
    }

    #[test]
    fn digest_lists_tier_alerts_changes_with_impact_and_exceptions() {
        let (_dir, path, conn) = store();
        let mut alert = crate::notify::message::tests::alert();
        alert.tier = "digest".into();
        alert.summary = "tokens per request up 30% on gpt-4o".into();
        crate::store::alerts::insert(&conn, 1, &alert, "firing", NOW - HOUR).unwrap();
        let mut old = alert.clone();
        old.summary = "two days ago".into();
        crate::store::alerts::insert(&conn, 2, &old, "firing", NOW - 50 * HOUR).unwrap();
        let mut loud = alert.clone();
        loud.tier = "page".into();
        loud.summary = "a page".into();
        crate::store::alerts::insert(&conn, 3, &loud, "firing", NOW - HOUR).unwrap();

        let deploy = ChangeEvent {
            kind: ChangeKind::Deploy,
            ts_ms: NOW - 5 * HOUR,
            scope: [("route".to_string(), "summarize".to_string())].into(),
            note: "prompt template v2".into(),
            origin: "api".into(),
        };
        crate::store::alerts::insert_change(&conn, &deploy, NOW - 5 * HOUR).unwrap();
        let report = json!({"summary": "cost per request up 12% after the deploy"});
        crate::store::alerts::set_impact(&conn, &deploy, &report).unwrap();
        let calendar = ChangeEvent {
            kind: ChangeKind::ConfigChange,
            ts_ms: NOW - HOUR,
            scope: Scope::new(),
            note: "calendar recalibration".into(),
            origin: "calendar".into(),
        };
        crate::store::alerts::insert_change(&conn, &calendar, NOW - HOUR).unwrap();

        let exception = |rule: &str, created: i64, hits: u32| {
            let e = crate::store::exceptions::insert(
                &conn,
                &NewException {
                    rule: rule.into(),
                    scope: [("model".to_string(), "gpt-4o".to_string())].into(),
                    reason: format!("{rule} is known"),
                    owner: "ana".into(),
                    ticket: None,
                    expires_ms: NOW + 3 * DAY_MS,
                },
                created,
            )
            .unwrap();
            for _ in 0..hits {
                crate::store::exceptions::add_hit(&conn, e.id, NOW - HOUR).unwrap();
            }
            e.id
        };
        exception("cost-per-request", NOW - 2 * DAY_MS, 5);
        exception("error-rate", NOW - DAY_MS, 9);
        let revoked = exception("latency", NOW - DAY_MS, 1);
        crate::store::exceptions::set_revoked(&conn, revoked, NOW - HOUR).unwrap();

        let digest = Digest::build(&path.as_path().into(), "digest", NOW).unwrap();
        let message = digest.message();
        assert_eq!(message.title, "driftwarden daily digest 2026-06-07");
        assert_eq!(message.tier.as_deref(), Some("digest"));
        let text = &message.text;
        for want in [
            "Digest alerts (1)",
            "FIRING cost-per-request · cost_drift on model=gpt-4o since 2026-06-07T08:00:00Z",
            "tokens per request up 30% on gpt-4o",
            "Changes (2)",
            "deploy route=summarize at 2026-06-07T04:00:00Z (api): prompt template v2",
            "impact: cost per request up 12% after the deploy",
            "config_change global at 2026-06-07T08:00:00Z (calendar): calendar recalibration",
            "impact: report pending",
            "Exceptions (2, most hits first)",
            "cost-per-request on model=gpt-4o: 5 hits, age 2.0d, expires 2026-06-10T09:00:00Z (in 3.0d), owner ana",
            "Spend (against the day before)\n  no traffic on either day",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        for absent in ["two days ago", "a page", "latency"] {
            assert!(!text.contains(absent), "{absent:?} in\n{text}");
        }
        let (busy, quiet) = (
            text.find("error-rate").unwrap(),
            text.find("cost-per-request on").unwrap(),
        );
        assert!(busy < quiet, "most hits first:\n{text}");

        let tiers = Tiers::defaults();
        let tier = tiers.digest();
        assert_eq!(tier.tier.name, "digest");
        assert_eq!(
            enqueue(
                &mut crate::store::outbox::open(&path.as_path().into()).unwrap(),
                tier,
                &message,
                NOW
            )
            .unwrap(),
            1
        );
        let queued: (String, String) = conn
            .query_row("SELECT channel, message FROM outbox", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(queued.0, "email");
        assert!(queued.1.contains("driftwarden daily digest 2026-06-07"));
    }

    #[test]
    fn without_a_tier_named_digest_the_second_least_severe_gets_it() {
        let tiers = Tiers::parse(
            "[[tier]]\nname = \"page\"\nchannels = [\"slack\"]\n[tier.when]\nspend_share = 0.2\n\
             [[tier]]\nname = \"low\"\nchannels = [\"email\"]\n[tier.when]\ntenants = 2\n\
             [[tier]]\nname = \"record\"\n",
            "test",
        )
        .unwrap();
        assert_eq!(tiers.digest().tier.name, "low");
    }
}
