//! The daily digest: one informational message for the past 24 hours, built from the
//! store — the digest tier's alerts, change events with their impact reports, the
//! exceptions by hits and age, and spend by model, route and tenant split into
//! volume, mix and rate effects against the day before.

use std::path::Path;

use chrono::DateTime;

use crate::domain::{Exception, Scope, rfc3339_ms, scope_label};
use crate::notify::Message;
use crate::store::alerts::{AlertFilter, AlertRow};
use crate::store::queries::{self, StoredChange};
use crate::store::spend::{self, ScopeTotal};
use crate::store::{StoreError, open_reader};
use crate::tiers::{TierDef, Tiers};

const DAY_MS: i64 = 86_400_000;
const DAY_MINUTES: i64 = 1440;
/// Most alerts and changes one digest lists; a busier day says how many more.
const MAX_ROWS: u32 = 200;
/// Values listed per dimension in the spend section, biggest spend first.
const TOP_VALUES: usize = 10;
/// The dimensions whose spend the digest splits, after the global total.
const SPEND_DIMS: [&str; 3] = ["model", "route", "tenant"];

/// The tier whose channels get the digest: the one named `digest`, else the
/// second-least severe (the catch-all last tier usually notifies nowhere).
pub fn digest_tier(tiers: &Tiers) -> &TierDef {
    let defs = tiers.defs();
    tiers
        .by_name("digest")
        .unwrap_or(&defs[defs.len().saturating_sub(2)])
}

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
    pub fn build(db: &Path, tier: &str, now_ms: i64) -> Result<Digest, StoreError> {
        let from_ms = now_ms - DAY_MS;
        let conn = open_reader(db)?;
        let alerts = crate::store::alerts::list(
            &conn,
            &AlertFilter {
                tier: Some(tier.to_string()),
                since_ms: Some(from_ms),
                limit: MAX_ROWS,
                ..AlertFilter::default()
            },
        )?;
        let changes = queries::changes(db, from_ms, MAX_ROWS)?
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

/// Queue `message` for every channel of `tier`; returns how many.
pub fn enqueue(
    db: &Path,
    tier: &TierDef,
    message: &Message,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let conn = crate::store::outbox::open(db)?;
    for channel in &tier.tier.channels {
        crate::store::outbox::enqueue(&conn, channel, message, now_ms)?;
    }
    Ok(tier.tier.channels.len())
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
