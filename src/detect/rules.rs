//! Detector rules: `rules/*.toml` (every file there except `pricing.toml` and
//! `tiers.toml`). Loaded and validated together; every error names the file, the
//! line and what to fix, so `driftwarden check` can list them all at once.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::domain::{Kind, Lane, SCOPE_DIMS, Signal};

/// Files in the rules directory that hold something other than detector rules.
pub const OTHER_FILES: [&str; 2] = ["pricing.toml", "tiers.toml"];

/// What a rule's detector does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// The bucket's signal against its baseline, with a test fit for the signal.
    Drift,
    /// A CUSUM step change that no change event covers: `unannounced_change`.
    Step,
    /// The rolling level drifted from the epoch's anchor: `baseline_creep`.
    Creep,
    /// A requested model now resolves to another model: `unannounced_change`, and
    /// an automatic `model_bump` change event.
    ModelBump,
    /// Cost fell while eval coverage or score fell: `false_efficiency`.
    FalseEfficiency,
}

/// Which way a change must go to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Increases only.
    Up,
    /// Decreases only.
    Down,
    /// Either way.
    Both,
}

impl Direction {
    /// Whether a change with this sign counts.
    pub fn admits(self, sign: f64) -> bool {
        match self {
            Direction::Up => sign > 0.0,
            Direction::Down => sign < 0.0,
            Direction::Both => sign != 0.0,
        }
    }
}

/// The dimensions a scope names, as a bit set over `SCOPE_DIMS` (0 = global).
pub type Shape = u8;

/// The shape of a scope's labels.
pub fn shape_of<'a>(dims: impl IntoIterator<Item = &'a String>) -> Shape {
    dims.into_iter()
        .filter_map(|d| SCOPE_DIMS.iter().position(|x| x == d))
        .fold(0, |s, i| s | 1 << i)
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique name, used as the alert's `rule`.
    pub name: String,
    /// What it does.
    pub detector: Detector,
    /// The signal it reads (the eval signals for `false_efficiency`).
    pub signal: Signal,
    /// What its findings are.
    pub kind: Kind,
    /// Which way counts.
    pub direction: Direction,
    /// The scope shapes it runs on.
    pub scopes: Vec<Shape>,
    /// Fewest observations (requests, or scored evals for eval signals) to judge.
    pub min_samples: u64,
    /// Significance level of the test.
    pub alpha: f64,
    /// Smallest relative change that matters (for mixes: total variation distance).
    pub min_change: f64,
    /// Smallest absolute change that matters, in the signal's unit.
    pub min_abs: f64,
    /// Smallest robust z-score (distance from the baseline in robust deviations).
    pub min_z: f64,
    /// How long the condition must hold before the alert fires, in ms.
    pub for_ms: i64,
    /// The least severe tier this rule's alerts may be capped to, if any.
    pub max_tier: Option<String>,
    /// A hard guard: fire when the signal passes this absolute value, whatever the
    /// baseline or epoch says.
    pub hard_limit: Option<f64>,
}

impl Rule {
    /// The bar an open alert must stay beyond to keep firing: half the change and
    /// the absolute change, half the z-score (at least 2), the square root of alpha.
    /// A value that hovers at the threshold keeps its alert open instead of
    /// flapping; only a return well inside the band lets it resolve.
    pub fn relaxed(&self) -> Rule {
        Rule {
            min_change: self.min_change / 2.0,
            min_abs: self.min_abs / 2.0,
            min_z: (self.min_z / 2.0).max(2.0),
            alpha: self.alpha.sqrt(),
            ..self.clone()
        }
    }

    /// The lane it reads.
    pub fn lane(&self) -> Lane {
        match self.detector {
            Detector::FalseEfficiency => Lane::Eval,
            _ => self.signal.lane(),
        }
    }
}

/// A problem in a rule file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

/// Every error found while loading rules.
#[derive(Debug, thiserror::Error)]
#[error("{} error(s) in the rules:\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
pub struct RuleErrors(pub Vec<RuleError>);

/// The loaded rule set.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// Rules in file-name then file order (earlier wins when two fire on one scope).
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    #[serde(default)]
    detector: Option<Spanned<String>>,
    signal: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    direction: Option<Spanned<String>>,
    scopes: Option<Spanned<Vec<String>>>,
    min_samples: Option<u64>,
    alpha: Option<Spanned<f64>>,
    min_change: Option<f64>,
    min_abs: Option<f64>,
    min_z: Option<f64>,
    #[serde(rename = "for")]
    for_: Option<Spanned<String>>,
    max_tier: Option<Spanned<String>>,
    hard_limit: Option<f64>,
}

/// What rule validation needs to know from outside the rules directory.
#[derive(Debug, Clone, Default)]
pub struct RuleContext {
    /// Configured pair shapes (`model+route`), beyond the single dimensions.
    pub pairs: Vec<Shape>,
    /// Tier names a `max_tier` may name; empty means any name is accepted.
    pub tiers: Vec<String>,
}

impl RuleSet {
    /// Load every rule file in `dir`.
    pub fn load_dir(dir: &Path, ctx: &RuleContext) -> Result<RuleSet, RuleErrors> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| {
                RuleErrors(vec![RuleError {
                    file: dir.to_path_buf(),
                    line: 0,
                    message: format!("cannot read the rules directory: {e} (point --rules at it)"),
                }])
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_none_or(|n| !OTHER_FILES.contains(&n))
            })
            .collect();
        files.sort();
        let mut set = RuleSet::default();
        let mut errors = Vec::new();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => set.parse(&file, &text, ctx, &mut errors),
                Err(e) => errors.push(RuleError {
                    file: file.clone(),
                    line: 0,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(RuleErrors(errors))
        }
    }

    /// Parse one file's text, appending its rules and errors.
    pub fn parse(
        &mut self,
        file: &Path,
        text: &str,
        ctx: &RuleContext,
        errors: &mut Vec<RuleError>,
    ) {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let mut err = |offset: usize, message: String| {
            errors.push(RuleError {
                file: file.to_path_buf(),
                line: line_of(offset),
                message,
            })
        };
        let raw: RawFile = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                err(offset, e.message().trim().to_string());
                return;
            }
        };
        for spanned in raw.rule {
            let at = spanned.span().start;
            let r = spanned.into_inner();
            match build(r, ctx, &self.rules) {
                Ok(rule) => self.rules.push(rule),
                Err((offset, message)) => err(offset.unwrap_or(at), message),
            }
        }
    }
}

type BuildError = (Option<usize>, String);

fn build(r: RawRule, ctx: &RuleContext, existing: &[Rule]) -> Result<Rule, BuildError> {
    let name_at = Some(r.name.span().start);
    let name = r.name.into_inner();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err((
            name_at,
            format!("rule name {name:?}: use letters, digits, '-' and '_'"),
        ));
    }
    if existing.iter().any(|x| x.name == name) {
        return Err((
            name_at,
            format!("rule {name:?} is defined twice; rule names must be unique"),
        ));
    }
    let detector = match &r.detector {
        None => Detector::Drift,
        Some(d) => parse_enum(
            d,
            "detector",
            "drift, step, creep, model_bump, false_efficiency",
        )?,
    };
    let signal = match (&r.signal, detector) {
        (Some(s), _) => Signal::parse(s.get_ref()).ok_or_else(|| {
            let names: Vec<&str> = Signal::ALL.iter().map(|s| s.as_str()).collect();
            (
                Some(s.span().start),
                format!(
                    "unknown signal {:?}; one of: {}",
                    s.get_ref(),
                    names.join(", ")
                ),
            )
        })?,
        (None, Detector::ModelBump) => Signal::ResolvedModelMix,
        (None, Detector::FalseEfficiency) => Signal::EvalCoverage,
        (None, _) => return Err((name_at, format!("rule {name:?} needs a `signal`"))),
    };
    if matches!(detector, Detector::Step | Detector::Creep) && signal.is_mix() {
        return Err((
            name_at,
            format!(
                "rule {name:?}: a {detector:?} detector needs a numeric signal, not the mix {}",
                signal.as_str()
            ),
        ));
    }
    let kind = match &r.kind {
        Some(k) => parse_enum(
            k,
            "kind",
            "traffic_drift, cost_drift, structural_drift, quality_drift, eval_coverage_drop, false_efficiency, unannounced_change, baseline_creep",
        )?,
        None => match detector {
            Detector::Drift => signal.default_kind(),
            Detector::Step | Detector::ModelBump => Kind::UnannouncedChange,
            Detector::Creep => Kind::BaselineCreep,
            Detector::FalseEfficiency => Kind::FalseEfficiency,
        },
    };
    let direction = match &r.direction {
        Some(d) => parse_enum(d, "direction", "up, down, both")?,
        None => Direction::Both,
    };
    let scopes = match &r.scopes {
        None => vec![0],
        Some(s) => {
            let mut shapes = Vec::new();
            for name in s.get_ref() {
                shapes.push(
                    parse_shape(name, ctx).map_err(|e| (Some(s.span().start), e.to_string()))?,
                );
            }
            shapes
        }
    };
    let alpha = match &r.alpha {
        Some(a) if !(0.0..0.5).contains(a.get_ref()) || *a.get_ref() == 0.0 => {
            return Err((
                Some(a.span().start),
                format!("alpha {} must be in (0, 0.5)", a.get_ref()),
            ));
        }
        Some(a) => *a.get_ref(),
        None => 0.001,
    };
    let for_ms = match &r.for_ {
        Some(f) => humantime::parse_duration(f.get_ref())
            .map_err(|e| {
                (
                    Some(f.span().start),
                    format!(
                        "for = {:?}: {e} (write e.g. \"20m\" or \"1h\")",
                        f.get_ref()
                    ),
                )
            })?
            .as_millis() as i64,
        None => 0,
    };
    let max_tier = match &r.max_tier {
        Some(t) if !ctx.tiers.is_empty() && !ctx.tiers.contains(t.get_ref()) => {
            return Err((
                Some(t.span().start),
                format!(
                    "max_tier {:?} is not a tier; one of: {}",
                    t.get_ref(),
                    ctx.tiers.join(", ")
                ),
            ));
        }
        t => t.as_ref().map(|t| t.get_ref().clone()),
    };
    Ok(Rule {
        name,
        detector,
        signal,
        kind,
        direction,
        scopes,
        min_samples: r.min_samples.unwrap_or(30),
        alpha,
        min_change: r.min_change.unwrap_or(0.2),
        min_abs: r.min_abs.unwrap_or(0.0),
        min_z: r.min_z.unwrap_or(4.0),
        for_ms,
        max_tier,
        hard_limit: r.hard_limit,
    })
}

fn parse_enum<T: serde::de::DeserializeOwned>(
    v: &Spanned<String>,
    field: &str,
    allowed: &str,
) -> Result<T, BuildError> {
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(v.get_ref()))
        .map_err(|_| {
            (
                Some(v.span().start),
                format!("unknown {field} {:?}; one of: {allowed}", v.get_ref()),
            )
        })
}

/// A rule's scope shape that names no scope the analysis keeps.
#[derive(Debug, thiserror::Error)]
enum ShapeError {
    /// A part that is not a scope dimension.
    #[error(
        "scope {name:?}: unknown dimension {dim:?}; use global, {dims} or a configured pair like model+route",
        dims = SCOPE_DIMS.join(", ")
    )]
    UnknownDim { name: String, dim: String },
    /// A pair the config does not list.
    #[error("scope {0:?} is not a configured pair; add it to [analysis] pairs in the config")]
    NotAPair(String),
}

/// Parse a scope shape: `global`, a dimension, or a configured pair `model+route`.
fn parse_shape(name: &str, ctx: &RuleContext) -> Result<Shape, ShapeError> {
    if name == "global" {
        return Ok(0);
    }
    let dims: Vec<String> = name.split('+').map(str::to_string).collect();
    if let Some(bad) = dims.iter().find(|d| !SCOPE_DIMS.contains(&d.as_str())) {
        return Err(ShapeError::UnknownDim {
            name: name.to_string(),
            dim: bad.clone(),
        });
    }
    let shape = shape_of(&dims);
    if dims.len() > 1 && !ctx.pairs.contains(&shape) {
        return Err(ShapeError::NotAPair(name.to_string()));
    }
    Ok(shape)
}

/// The one rule of `text` (a `[[rule]]` table), for tests of what judges it.
#[cfg(test)]
pub(crate) fn one_rule(text: &str) -> Rule {
    let mut set = RuleSet { rules: Vec::new() };
    let mut errors = Vec::new();
    set.parse(
        Path::new("t.toml"),
        text,
        &RuleContext::default(),
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:?}");
    set.rules.remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RuleContext {
        RuleContext {
            pairs: vec![shape_of(&["model".to_string(), "route".to_string()])],
            tiers: vec![
                "page".into(),
                "alert".into(),
                "digest".into(),
                "record".into(),
            ],
        }
    }

    fn parse(text: &str) -> (RuleSet, Vec<RuleError>) {
        let mut set = RuleSet::default();
        let mut errors = Vec::new();
        set.parse(Path::new("r.toml"), text, &ctx(), &mut errors);
        (set, errors)
    }

    #[test]
    fn the_shipped_rules_load() {
        let set = RuleSet::load_dir(Path::new("rules"), &ctx()).unwrap();
        assert!(set.rules.len() >= 10);
        let kinds: std::collections::BTreeSet<Kind> = set.rules.iter().map(|r| r.kind).collect();
        assert!(kinds.len() >= 8, "every kind has a default rule: {kinds:?}");
    }

    #[test]
    fn a_rule_with_defaults() {
        let (set, errors) = parse(
            "[[rule]]\nname = \"e\"\nsignal = \"error_rate\"\nscopes = [\"global\", \"model+route\"]\nfor = \"20m\"\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let r = &set.rules[0];
        assert_eq!(
            (r.kind, r.for_ms, r.scopes.len()),
            (Kind::StructuralDrift, 1_200_000, 2)
        );
    }

    #[test]
    fn errors_name_the_line_and_what_to_do() {
        let (_, errors) = parse(
            "[[rule]]\nname = \"a\"\nsignal = \"eror_rate\"\n\n[[rule]]\nname = \"b\"\nsignal = \"requests\"\nscopes = [\"tenant+route\"]\n\n[[rule]]\nname = \"c\"\nsignal = \"requests\"\nmax_tier = \"sev1\"\n[[rule]]\nname = \"c\"\nsignal = \"requests\"\nfor = \"soon\"\n",
        );
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 8, 13, 17], "{errors:#?}");
        assert!(errors[0].message.contains("error_rate"));
        assert!(errors[1].message.contains("[analysis] pairs"));
        assert!(errors[2].message.contains("page"));
        assert!(errors[3].message.contains("20m"));
    }

    #[test]
    fn syntax_errors_and_unknown_fields_are_located() {
        let (_, errors) = parse("[[rule]]\nname = \"a\"\nsignal = \"requests\"\nthreshold = 3\n");
        assert_eq!(errors[0].line, 4, "{errors:?}");
        assert!(errors[0].message.contains("threshold"));
        let (_, errors) = parse("[[rule]]\nname = \"a\nsignal = 1\n");
        assert_eq!(errors[0].line, 2, "{errors:?}");
    }
}
