//! Blast-radius tiers (`rules/tiers.toml`): an alert's tier comes from the measured
//! impact of its scope — shares of requests and spend, tenants, money at risk per
//! day, customer-facing routes — never from a label the rule chooses. A rule can only
//! cap its tier lower. `budget.rs` stops a tier from flooding its channels.

mod budget;

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};
use toml::Spanned;

use crate::domain::{Impact, Tier};

pub use budget::{Admission, Budget, DayCount, Flood, flood_summary, flooding_alerts};

/// The tier file in the rules directory.
pub const TIERS_FILE: &str = "tiers.toml";

/// The shipped defaults, used when the rules directory has no `tiers.toml` so the
/// daemon runs with no configuration at all.
const DEFAULT_TIERS: &str = include_str!("../../rules/tiers.toml");

/// Most tiers a file may declare; ranks are `u8` and more than a handful defeats the
/// purpose of tiers.
const MAX_TIERS: usize = 8;

/// A problem with the tier file, located by line.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    /// The tier file exists but could not be read.
    #[error("cannot read tier file {path}: {source}")]
    Read {
        /// Path of the tier file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file does not parse, or a value in it is unusable.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// Path (or other origin) of the tier file.
        path: String,
        /// 1-based line of the offending value.
        line: usize,
        /// What is wrong and what to do.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TiersFile {
    meta_tier: Option<Spanned<String>>,
    tier: Vec<TierEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierEntry {
    name: Spanned<String>,
    #[serde(default)]
    channels: Vec<String>,
    daily_budget: Option<Spanned<u32>>,
    when: Option<Spanned<Thresholds>>,
}

/// The thresholds of one tier: any one met selects it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Requests in scope / all requests.
    pub requests_share: Option<f64>,
    /// Spend in scope / all spend.
    pub spend_share: Option<f64>,
    /// Distinct tenants with traffic in scope.
    pub tenants: Option<u32>,
    /// Spend at risk per day, USD.
    pub money_at_risk_per_day_usd: Option<f64>,
    /// Share of requests, counted only when a customer-facing route is in scope.
    pub customer_facing_requests_share: Option<f64>,
}

impl Thresholds {
    fn is_empty(&self) -> bool {
        *self == Thresholds::default()
    }

    /// Every threshold `impact` meets, as `name value >= threshold`. NaN meets nothing.
    fn met_by(&self, impact: &Impact) -> Vec<String> {
        let mut met = Vec::new();
        let mut check = |name: &str, value: f64, threshold: Option<f64>| {
            if let Some(t) = threshold
                && value >= t
            {
                // Four significant digits say enough; a raw f64 reads as noise.
                let shown = format!("{value:.3e}").parse::<f64>().unwrap_or(value);
                met.push(format!("{name} {shown} >= {t}"));
            }
        };
        check("requests_share", impact.requests_share, self.requests_share);
        check("spend_share", impact.spend_share, self.spend_share);
        check(
            "tenants",
            f64::from(impact.tenants),
            self.tenants.map(f64::from),
        );
        check(
            "money_at_risk_per_day_usd",
            impact.money_at_risk_per_day_usd,
            self.money_at_risk_per_day_usd,
        );
        if impact.customer_facing {
            check(
                "customer_facing_requests_share",
                impact.requests_share,
                self.customer_facing_requests_share,
            );
        }
        met
    }
}

/// One tier as loaded: the shared `Tier` plus what selects it and its budget.
#[derive(Debug, Clone, PartialEq)]
pub struct TierDef {
    /// Name, rank and channels.
    pub tier: Tier,
    /// `None` for the last, catch-all tier.
    pub when: Option<Thresholds>,
    /// Notifications per channel per UTC day; `None`: no limit.
    pub daily_budget: Option<u32>,
}

/// The loaded tier table, most severe first.
#[derive(Debug, Clone, PartialEq)]
pub struct Tiers {
    defs: Vec<TierDef>,
    meta: usize,
}

/// The tier an alert gets, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// The tier after any cap.
    pub tier: Tier,
    /// Which thresholds chose the computed tier (or that none did), and the cap if it applied.
    pub reason: String,
    /// The tier the impact alone selected, when a cap lowered it.
    pub capped_from: Option<String>,
}

impl Assignment {
    /// The evidence block for the alert: the impact numbers that chose the tier.
    pub fn evidence(&self, impact: &Impact) -> Value {
        json!({
            "tier": self.tier.name,
            "tier_rank": self.tier.rank,
            "chosen_by": self.reason,
            "capped_from": self.capped_from,
            "impact": impact,
        })
    }
}

impl Tiers {
    /// Load `tiers.toml` from the rules directory, or the shipped defaults when the
    /// directory has none.
    pub fn load(dir: &Path) -> Result<Tiers, TierError> {
        let path = dir.join(TIERS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Tiers::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Tiers::defaults()),
            Err(source) => Err(TierError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// The tier whose channels get the daily digest: the one named `digest`, else
    /// the second-least severe (the catch-all last tier usually notifies nowhere).
    pub fn digest(&self) -> &TierDef {
        self.by_name("digest")
            .unwrap_or(&self.defs[self.defs.len().saturating_sub(2)])
    }

    /// Whether tier `name` is more severe than the digest tier: its alerts are sent
    /// one by one and repeated while they fire. The digest tier's and less severe
    /// alerts are told in the daily digest only.
    pub fn above_digest(&self, name: &str) -> bool {
        let digest = self.digest().tier.rank;
        self.by_name(name).is_some_and(|d| d.tier.rank < digest)
    }

    /// The shipped `rules/tiers.toml`.
    pub fn defaults() -> Tiers {
        Tiers::parse(DEFAULT_TIERS, "built-in tiers.toml").expect("the shipped tiers.toml is valid")
    }

    /// Parse a tier file; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Tiers, TierError> {
        let invalid = |span: Option<Range<usize>>, message: String| TierError::Invalid {
            path: origin.to_string(),
            line: line_of(text, span.map_or(0, |s| s.start)),
            message,
        };
        let file: TiersFile =
            toml::from_str(text).map_err(|e| invalid(e.span(), e.message().trim().to_string()))?;
        if file.tier.is_empty() || file.tier.len() > MAX_TIERS {
            return Err(invalid(
                None,
                format!(
                    "declare between 1 and {MAX_TIERS} [[tier]] tables, most severe first; found {}",
                    file.tier.len()
                ),
            ));
        }
        let last = file.tier.len() - 1;
        let mut defs: Vec<TierDef> = Vec::with_capacity(file.tier.len());
        for (i, entry) in file.tier.into_iter().enumerate() {
            let name = entry.name.get_ref();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return Err(invalid(
                    Some(entry.name.span()),
                    format!("tier name {name:?} must be lowercase letters, digits, '_' or '-'"),
                ));
            }
            if defs.iter().any(|d| d.tier.name == *name) {
                return Err(invalid(
                    Some(entry.name.span()),
                    format!("tier {name:?} is declared twice"),
                ));
            }
            for (j, ch) in entry.channels.iter().enumerate() {
                if ch.trim().is_empty() || entry.channels[..j].contains(ch) {
                    return Err(invalid(
                        Some(entry.name.span()),
                        format!("tier {name:?}: channel {ch:?} is empty or listed twice"),
                    ));
                }
            }
            if let Some(b) = &entry.daily_budget
                && *b.get_ref() == 0
            {
                return Err(invalid(
                    Some(b.span()),
                    format!(
                        "tier {name:?}: daily_budget must be at least 1 (leave it out for no limit; use channels = [] to notify nowhere)"
                    ),
                ));
            }
            let when = match (entry.when, i == last) {
                (Some(w), true) => {
                    return Err(invalid(
                        Some(w.span()),
                        format!(
                            "tier {name:?} is the last tier, so it must have no [tier.when]: it catches every alert that no threshold selects"
                        ),
                    ));
                }
                (None, false) => {
                    return Err(invalid(
                        Some(entry.name.span()),
                        format!(
                            "tier {name:?} has no [tier.when]; only the last tier may be a catch-all"
                        ),
                    ));
                }
                (None, true) => None,
                (Some(w), false) => {
                    let span = w.span();
                    let t = w.into_inner();
                    check_thresholds(&t)
                        .map_err(|m| invalid(Some(span.clone()), format!("tier {name:?}: {m}")))?;
                    Some(t)
                }
            };
            defs.push(TierDef {
                tier: Tier {
                    name: name.clone(),
                    rank: (i + 1) as u8,
                    channels: entry.channels,
                },
                when,
                daily_budget: entry.daily_budget.map(|b| b.into_inner()),
            });
        }
        let meta = match &file.meta_tier {
            Some(m) => defs
                .iter()
                .position(|d| d.tier.name == *m.get_ref())
                .ok_or_else(|| {
                    invalid(
                        Some(m.span()),
                        format!("meta_tier {:?} is not a declared tier", m.get_ref()),
                    )
                })?,
            // Second tier when there is one: seen the same day, without paging.
            None => 1.min(defs.len() - 1),
        };
        Ok(Tiers { defs, meta })
    }

    /// Every tier, most severe first.
    pub fn defs(&self) -> &[TierDef] {
        &self.defs
    }

    /// The rank of the tier named `name`, for the rules loader to validate a
    /// rule's `max_tier`; `None` when no tier has that name.
    pub fn rank_of(&self, name: &str) -> Option<u8> {
        self.by_name(name).map(|d| d.tier.rank)
    }

    /// The tier named `name`.
    pub fn by_name(&self, name: &str) -> Option<&TierDef> {
        self.defs.iter().find(|d| d.tier.name == name)
    }

    /// The tier of meta-alerts (`tier_flooding`, `exception_creep`): `meta_tier` in
    /// the file, else the second tier.
    pub fn meta_tier(&self) -> &Tier {
        &self.defs[self.meta].tier
    }

    /// The tier for an alert with this impact. `cap` (a rule's `max_tier`) can only
    /// make it less severe: a cap naming a more severe tier changes nothing. The
    /// rules loader rejects unknown cap names with `rank_of`; one reaching here is
    /// ignored with a warning.
    pub fn assign(&self, impact: &Impact, cap: Option<&str>) -> Assignment {
        let (computed, reason) = self
            .defs
            .iter()
            .find_map(|d| {
                let met = d.when.as_ref()?.met_by(impact);
                (!met.is_empty()).then(|| (d, met.join(", ")))
            })
            .unwrap_or_else(|| {
                let last = self.defs.last().expect("at least one tier");
                (last, "no threshold of a more severe tier met".to_string())
            });
        let capped = cap.and_then(|name| {
            let def = self.by_name(name);
            if def.is_none() {
                tracing::warn!(cap = name, "tier cap names no tier; ignored");
            }
            def.filter(|d| d.tier.rank > computed.tier.rank)
        });
        match capped {
            Some(c) => Assignment {
                tier: c.tier.clone(),
                reason: format!("{reason}; capped by the rule to {}", c.tier.name),
                capped_from: Some(computed.tier.name.clone()),
            },
            None => Assignment {
                tier: computed.tier.clone(),
                reason,
                capped_from: None,
            },
        }
    }
}

/// A `[tier.when]` table no alert could be held against.
#[derive(Debug, thiserror::Error)]
enum ThresholdError {
    /// No threshold at all.
    #[error(
        "[tier.when] names no threshold; give at least one (requests_share, spend_share, tenants, money_at_risk_per_day_usd, customer_facing_requests_share)"
    )]
    Empty,
    /// A share outside 0..=1.
    #[error("{name} = {value} must be a share between 0 and 1 (0.25 = a quarter)")]
    Share { name: &'static str, value: f64 },
    /// A negative or non-finite amount of money.
    #[error("money_at_risk_per_day_usd = {0} must be a non-negative number of dollars")]
    Money(f64),
}

fn check_thresholds(t: &Thresholds) -> Result<(), ThresholdError> {
    if t.is_empty() {
        return Err(ThresholdError::Empty);
    }
    for (name, v) in [
        ("requests_share", t.requests_share),
        ("spend_share", t.spend_share),
        (
            "customer_facing_requests_share",
            t.customer_facing_requests_share,
        ),
    ] {
        if let Some(v) = v
            && !(0.0..=1.0).contains(&v)
        {
            return Err(ThresholdError::Share { name, value: v });
        }
    }
    if let Some(m) = t.money_at_risk_per_day_usd
        && !(m.is_finite() && m >= 0.0)
    {
        return Err(ThresholdError::Money(m));
    }
    Ok(())
}

/// 1-based line number of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn impact() -> Impact {
        Impact::default()
    }

    fn tier_of(tiers: &Tiers, impact: &Impact) -> String {
        tiers.assign(impact, None).tier.name
    }

    #[test]
    fn shipped_defaults_load_with_four_tiers_in_order() {
        let t = Tiers::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"))).unwrap();
        let names: Vec<_> = t.defs().iter().map(|d| d.tier.name.as_str()).collect();
        assert_eq!(names, ["page", "alert", "digest", "record"]);
        assert_eq!(t.rank_of("page"), Some(1));
        assert_eq!(t.rank_of("record"), Some(4));
        assert_eq!(t.rank_of("urgent"), None);
        assert_eq!(t.meta_tier().name, "alert");
        assert!(t.by_name("record").unwrap().tier.channels.is_empty());
        let missing = tempfile::tempdir().unwrap();
        assert_eq!(Tiers::load(missing.path()).unwrap(), t);
    }

    #[test]
    fn each_threshold_selects_its_tier() {
        let t = Tiers::defaults();
        assert_eq!(tier_of(&t, &impact()), "record");
        let cases = [
            (
                Impact {
                    requests_share: 0.3,
                    ..impact()
                },
                "page",
                "requests_share",
            ),
            (
                Impact {
                    spend_share: 0.06,
                    ..impact()
                },
                "alert",
                "spend_share",
            ),
            (
                Impact {
                    tenants: 2,
                    ..impact()
                },
                "digest",
                "tenants",
            ),
            (
                Impact {
                    tenants: 5,
                    ..impact()
                },
                "alert",
                "tenants",
            ),
            (
                Impact {
                    money_at_risk_per_day_usd: 500.0,
                    ..impact()
                },
                "page",
                "money_at_risk_per_day_usd",
            ),
            (
                Impact {
                    requests_share: 0.06,
                    customer_facing: true,
                    ..impact()
                },
                "page",
                "customer_facing_requests_share",
            ),
        ];
        for (imp, want, why) in cases {
            let a = t.assign(&imp, None);
            assert_eq!(a.tier.name, want, "{imp:?}");
            assert!(a.reason.contains(why), "{}", a.reason);
        }
        let not_facing = Impact {
            requests_share: 0.06,
            ..impact()
        };
        assert_eq!(
            tier_of(&t, &not_facing),
            "alert",
            "the customer-facing threshold needs a customer-facing route in scope"
        );
        let nan = Impact {
            spend_share: f64::NAN,
            ..impact()
        };
        assert_eq!(tier_of(&t, &nan), "record");
    }

    #[test]
    fn evidence_shows_the_numbers_that_chose_the_tier() {
        let t = Tiers::defaults();
        let imp = Impact {
            spend_share: 0.3,
            tenants: 7,
            ..impact()
        };
        let e = t.assign(&imp, None).evidence(&imp);
        assert_eq!(e["tier"], "page");
        assert_eq!(e["tier_rank"], 1);
        assert_eq!(e["impact"]["spend_share"], 0.3);
        assert_eq!(e["impact"]["tenants"], 7);
        assert!(
            e["chosen_by"]
                .as_str()
                .unwrap()
                .contains("spend_share 0.3 >= 0.25")
        );
    }

    #[test]
    fn a_cap_lowers_but_never_raises() {
        let t = Tiers::defaults();
        let big = Impact {
            requests_share: 0.5,
            ..impact()
        };
        let capped = t.assign(&big, Some("digest"));
        assert_eq!((capped.tier.name.as_str(), capped.tier.rank), ("digest", 3));
        assert_eq!(capped.capped_from.as_deref(), Some("page"));
        assert!(capped.reason.contains("capped by the rule to digest"));
        let small = Impact {
            tenants: 2,
            ..impact()
        };
        let not_raised = t.assign(&small, Some("page"));
        assert_eq!(not_raised.tier.name, "digest");
        assert_eq!(not_raised.capped_from, None);
        assert_eq!(t.assign(&small, Some("digest")).capped_from, None);
        assert_eq!(t.assign(&big, Some("nonexistent")).tier.name, "page");
    }

    #[test]
    fn load_errors_name_file_and_line() {
        let cases = [
            (
                "[[tier]]\nname = \"page\"\ndaily_budget = \"five\"\n",
                3,
                "invalid type",
            ),
            (
                "[[tier]]\nname = \"page\"\n[tier.when]\nrequests_share = 0.2\n\n[[tier]]\nname = \"page\"\n",
                7,
                "declared twice",
            ),
            (
                "[[tier]]\nname = \"page\"\n[tier.when]\nrequests_share = 25\n[[tier]]\nname = \"rest\"\n",
                3,
                "between 0 and 1",
            ),
            (
                "[[tier]]\nname = \"page\"\n[[tier]]\nname = \"rest\"\n",
                2,
                "only the last tier may be a catch-all",
            ),
            (
                "[[tier]]\nname = \"page\"\n[tier.when]\nrequests_share = 0.2\n[[tier]]\nname = \"rest\"\n[tier.when]\ntenants = 1\n",
                7,
                "must have no [tier.when]",
            ),
            (
                "[[tier]]\nname = \"page\"\n[tier.when]\nrequest_share = 0.2\n[[tier]]\nname = \"rest\"\n",
                4,
                "unknown field",
            ),
            (
                "meta_tier = \"loud\"\n[[tier]]\nname = \"rest\"\n",
                1,
                "not a declared tier",
            ),
            (
                "[[tier]]\nname = \"rest\"\ndaily_budget = 0\n",
                3,
                "at least 1",
            ),
        ];
        for (text, line, want) in cases {
            let err = Tiers::parse(text, "rules/tiers.toml").unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("rules/tiers.toml:{line}: ")),
                "{text}: {msg}"
            );
            assert!(msg.contains(want), "{text}: {msg}");
        }
    }
}
