//! Configuration: embedded defaults, overridden by a TOML file, overridden by flags.
//! Secrets may come from the environment (`DRIFTWARDEN_TOKEN`) so that none need be
//! written into a file.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::adapters::{Format, MappedFormat, Mapping};
use crate::domain::ExposeSecret;
use crate::domain::Secret;
use crate::sources::gateway_db::{DbSpec, DbStart, Flavour};
use crate::sources::tail::{StartAt, TailSpec};
use crate::store::Location;

/// Default HTTP address: loopback only, as a sidecar needs.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Default database file, relative to the working directory.
pub const DEFAULT_DB: &str = "driftwarden.db";
/// Default rules directory (price table, later rules and tiers).
pub const DEFAULT_RULES: &str = "rules";

/// A configuration problem, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path of the config file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or does not fit the expected keys and types.
    #[error("config file {path} is invalid: {message}")]
    Invalid {
        /// Path of the config file.
        path: String,
        /// What the parser reported.
        message: String,
    },
    /// A value from the file or the flags is unusable; the message says which and why.
    #[error("{0}")]
    Value(String),
    /// A `[[channel]]` entry (or the environment's default channel) is unusable.
    #[error(transparent)]
    Channel(#[from] crate::notify::config::ChannelError),
    /// A `[schedules]` setting is unusable.
    #[error(transparent)]
    Schedule(#[from] crate::schedule::InvalidSchedule),
}

/// The clock the live daemon decides alerts and groups notifications on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClockMode {
    /// The wall clock: buckets close as time passes, so silence is judged, and
    /// notifications are grouped, repeated and budgeted in real time.
    #[default]
    Wall,
    /// The newest data read, as `replay` runs: a backlog tailed by `serve` is
    /// judged and notified exactly as a replay of the same files. For backtests
    /// through the live path; silence after the newest record is never judged.
    Data,
}

/// The config file, as written. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address the HTTP API listens on (default `127.0.0.1:7878`).
    pub listen: Option<SocketAddr>,
    /// Address OTLP/gRPC listens on (usually `…:4317`); none by default (OTLP/HTTP is
    /// always on the API's address).
    pub otlp_grpc_listen: Option<SocketAddr>,
    /// driftwarden's database (default `driftwarden.db`): a SQLite file path, or
    /// `postgres://...` / `env:VAR` for PostgreSQL shared by replicas.
    pub db: Option<String>,
    /// Rules directory holding `pricing.toml` (default `rules`).
    pub rules: Option<PathBuf>,
    /// API token for write endpoints. Prefer `DRIFTWARDEN_TOKEN`.
    pub token: Option<Secret>,
    /// Days to keep raw events, eval scores and dead letters; aggregates are kept (default 7).
    pub retention_days: Option<u32>,
    /// Largest request body accepted, in bytes (default 16 MiB).
    pub max_body_bytes: Option<usize>,
    /// Longest tailed line read, in bytes; longer lines are dead-lettered (default 1 MiB).
    pub max_line_bytes: Option<usize>,
    /// Seconds a record's timestamp may run ahead of our clock before it is refused (default 900).
    pub max_future_skew_secs: Option<u64>,
    /// The clock alerts are decided and notifications grouped on: `wall` (default)
    /// or `data` (see `ClockMode`).
    pub clock: Option<ClockMode>,
    /// Replicas on PostgreSQL: seconds a leader or source lease lasts without renewal
    /// (default 15). A crashed holder is replaced within about 1.3 times this.
    pub lease_seconds: Option<u32>,
    /// Usage log files to follow.
    #[serde(default)]
    pub tail: Vec<TailEntry>,
    /// Gateway databases to follow (New API / One API `logs` tables).
    #[serde(default)]
    pub gateway_db: Vec<GatewayDbEntry>,
    /// Readable names for hashed gateway identities.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// New API / One API settings.
    #[serde(default)]
    pub newapi: NewApiConfig,
    /// Mapped formats by name, usable as `--tail PATH:NAME` and `?format=NAME`.
    #[serde(default)]
    pub formats: BTreeMap<String, MappedFormat>,
    /// Routes whose answers customers see; an alert with one in scope can reach a
    /// higher tier (`customer_facing_requests_share` in `rules/tiers.toml`).
    #[serde(default)]
    pub customer_facing_routes: Vec<String>,
    /// Exception registry limits.
    #[serde(default)]
    pub exceptions: ExceptionsConfig,
    /// Notification channels (`[[channel]]`), besides those the environment sets up.
    #[serde(default)]
    pub channel: Vec<crate::notify::ChannelConfig>,
    /// The dashboard's URL as the team reaches it (behind a proxy, say); messages cut
    /// to a chat service's size limit, and PagerDuty events, link to it.
    pub dashboard_url: Option<String>,
    /// `[analysis]`: buckets, lateness, eval settling, scopes and their cardinality cap.
    #[serde(default)]
    pub analysis: crate::lanes::LaneParams,
    /// `[baselines]`: how baselines learn.
    #[serde(default)]
    pub baselines: crate::baselines::BaselineParams,
    /// `[recalibration]`: warm-up and epoch rules after change events.
    #[serde(default)]
    pub recalibration: crate::engine::RecalibrationParams,
    /// `[routing]`: notification grouping and repeats.
    #[serde(default)]
    pub routing: crate::alerts::RoutingParams,
    /// `[schedules]`: cron expressions for the digest, sweeps, retention and calendar.
    #[serde(default)]
    pub schedules: crate::schedule::SchedulesConfig,
}

/// `[exceptions]`: limits of the exception registry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionsConfig {
    /// Longest an exception may run ahead of now, in days (default 14).
    pub max_lifetime_days: Option<u32>,
    /// Renewals allowed per exception (default 2).
    pub max_renewals: Option<u32>,
    /// More active exceptions than this on one rule raise `exception_creep` (default 3).
    pub max_active_per_rule: Option<u32>,
}

/// One `[[tail]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailEntry {
    /// The file to follow.
    pub path: PathBuf,
    /// Record format: a built-in name or a `[formats.NAME]` (default `native`).
    #[serde(default = "default_format")]
    pub format: String,
    /// Where to begin when the file has no checkpoint (default `beginning`).
    #[serde(default)]
    pub start: StartAt,
}

/// One `[[gateway_db]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayDbEntry {
    /// `sqlite:///path`, `postgres://...`, `mysql://...`, or `env:VAR` to read the URL
    /// (and its password) from an environment variable.
    pub url: Secret,
    /// Which gateway wrote the table (default `newapi`).
    #[serde(default)]
    pub flavour: Flavour,
    /// Name of the usage table (default `logs`).
    #[serde(default = "default_table")]
    pub table: String,
    /// `newest` (default), `first`, or a time such as `2026-06-01T00:00:00Z`.
    pub start: Option<String>,
    /// Milliseconds between polls once caught up (default 2000, at least 50).
    pub poll_ms: Option<u64>,
    /// Rows read per query, at most (default 5000, at most 100000).
    pub batch_rows: Option<u32>,
    /// Channel id to provider name, e.g. `{ "7" = "azure-east" }`.
    #[serde(default)]
    pub channels: BTreeMap<String, String>,
}

fn default_table() -> String {
    "logs".to_string()
}

/// `[identity]`: readable names for hashed identities.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Raw identity (key name, user name, team id) to the label stored instead of its hash.
    #[serde(default)]
    pub aliases: HashMap<String, String>,
}

/// `[newapi]`: New API / One API settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApiConfig {
    /// Quota units per US dollar (`QuotaPerUnit`, 500000 unless the operator changed it).
    pub quota_per_unit: Option<f64>,
}

fn default_format() -> String {
    "native".to_string()
}

/// The resolved configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Address OTLP/gRPC listens on, if it is on.
    pub otlp_grpc_listen: Option<SocketAddr>,
    /// driftwarden's database: a SQLite file or a PostgreSQL URL.
    pub db: Location,
    /// This replica's node: tail checkpoints on a shared PostgreSQL are kept per
    /// node and path.
    pub node: String,
    /// Rules directory holding `pricing.toml`.
    pub rules: PathBuf,
    /// `None`: generate one and keep it in the token file beside the database.
    pub token: Option<Secret>,
    /// Days to keep raw events, eval scores and dead letters (at least 1).
    pub retention_days: u32,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest tailed line read, in bytes.
    pub max_line_bytes: usize,
    /// Seconds a record's timestamp may run ahead of our clock before it is refused.
    pub max_future_skew_secs: u64,
    /// How long a lease on a PostgreSQL store lasts without renewal, in milliseconds.
    pub lease_ttl_ms: i64,
    /// The clock alerts are decided and notifications grouped on.
    pub clock: ClockMode,
    /// Files to follow, from `[[tail]]` and `--tail`.
    pub tails: Vec<TailSpec>,
    /// Gateway databases to follow, from `[[gateway_db]]` and `--gateway-db`.
    pub gateway_dbs: Vec<DbSpec>,
    /// Raw identity to the label stored instead of its hash.
    pub aliases: HashMap<String, String>,
    /// New API / One API quota units per US dollar.
    pub quota_per_unit: f64,
    /// Checked mapped formats by name.
    pub formats: BTreeMap<String, Arc<Mapping>>,
    /// Routes whose answers customers see.
    pub customer_facing_routes: Vec<String>,
    /// Exception registry limits.
    pub exceptions: crate::exceptions::Policy,
    /// Validated notification channels, from `[[channel]]` and the environment.
    pub channels: Vec<crate::notify::Channel>,
    /// The dashboard's public URL, for links in notifications.
    pub dashboard_url: Option<String>,
    /// Lanes, baselines and recalibration parameters.
    pub engine: crate::engine::EngineParams,
    /// Notification grouping and repeats.
    pub routing: crate::alerts::RoutingParams,
    /// Validated schedules of the digest, sweeps, retention and calendar recalibration.
    pub schedules: crate::schedule::Schedules,
}

/// Values given on the command line; each overrides the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// Address from `--listen`.
    pub listen: Option<SocketAddr>,
    /// Database from `--db` (a SQLite path or a PostgreSQL URL).
    pub db: Option<String>,
    /// Node name from `--node`.
    pub node: Option<String>,
    /// Rules directory from `--rules`.
    pub rules: Option<PathBuf>,
    /// API token from `--token` or `DRIFTWARDEN_TOKEN`.
    pub token: Option<Secret>,
    /// Days to keep raw records, from `--retention-days`.
    pub retention_days: Option<u32>,
    /// The decision clock, from `--clock`.
    pub clock: Option<ClockMode>,
    /// `PATH[:FORMAT]` values of `--tail`.
    pub tails: Vec<String>,
    /// Where files without a checkpoint begin (`--tail-start`), `[[tail]]` entries included.
    pub tail_start: Option<StartAt>,
    /// URLs of `--gateway-db`, with the flavour, table and start they share.
    pub gateway_dbs: Vec<Secret>,
    /// Which gateway wrote the `--gateway-db` tables (`--gateway-db-flavour`).
    pub gateway_db_flavour: Option<Flavour>,
    /// Usage table name of the `--gateway-db` sources (`--gateway-db-table`).
    pub gateway_db_table: Option<String>,
    /// Where databases without a cursor begin (`--gateway-db-start`), `[[gateway_db]]` included.
    pub gateway_db_start: Option<String>,
}

impl FileConfig {
    /// Read and parse a config file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

impl Config {
    /// Resolve defaults, the optional file and the flags into one configuration.
    pub fn resolve(file: FileConfig, flags: Overrides) -> Result<Config, ConfigError> {
        let mut formats = BTreeMap::new();
        for (name, f) in file.formats {
            if matches!(
                name.as_str(),
                "native" | "newapi" | "oneapi" | "litellm" | "evals"
            ) {
                return Err(ConfigError::Value(format!(
                    "[formats.{name}] shadows a built-in format; pick another name"
                )));
            }
            let mapping = f
                .compile()
                .map_err(|m| ConfigError::Value(format!("[formats.{name}] {m}")))?;
            formats.insert(name, Arc::new(mapping));
        }
        let mut tails = Vec::new();
        for entry in file.tail {
            tails.push(tail_spec(
                entry.path,
                &entry.format,
                flags.tail_start.unwrap_or(entry.start),
                &formats,
            )?);
        }
        for raw in &flags.tails {
            let (path, format) = split_tail_arg(raw);
            tails.push(tail_spec(
                PathBuf::from(path),
                format,
                flags.tail_start.unwrap_or_default(),
                &formats,
            )?);
        }
        let mut gateway_dbs = Vec::new();
        for entry in file.gateway_db {
            let mut channels = BTreeMap::new();
            for (id, name) in entry.channels {
                let id = id.parse::<i64>().map_err(|_| {
                    ConfigError::Value(format!(
                        "[[gateway_db]] channels: key {id:?} must be a channel id number"
                    ))
                })?;
                channels.insert(id, name);
            }
            gateway_dbs.push(db_spec(
                entry.url.expose_secret(),
                entry.flavour,
                entry.table,
                flags.gateway_db_start.as_deref().or(entry.start.as_deref()),
                entry.poll_ms,
                entry.batch_rows,
                channels,
            )?);
        }
        for url in &flags.gateway_dbs {
            gateway_dbs.push(db_spec(
                url.expose_secret(),
                flags.gateway_db_flavour.unwrap_or_default(),
                flags.gateway_db_table.clone().unwrap_or_else(default_table),
                flags.gateway_db_start.as_deref(),
                None,
                None,
                BTreeMap::new(),
            )?);
        }
        let quota_per_unit = file.newapi.quota_per_unit.unwrap_or(500_000.0);
        if !(quota_per_unit.is_finite() && quota_per_unit > 0.0) {
            return Err(ConfigError::Value(
                "[newapi] quota_per_unit must be a positive number (New API's default is 500000)"
                    .into(),
            ));
        }
        let retention_days = flags.retention_days.or(file.retention_days).unwrap_or(7);
        if retention_days == 0 {
            return Err(ConfigError::Value(
                "retention_days must be at least 1".into(),
            ));
        }
        let defaults = crate::exceptions::Policy::default();
        let exceptions = crate::exceptions::Policy {
            max_lifetime_days: file
                .exceptions
                .max_lifetime_days
                .unwrap_or(defaults.max_lifetime_days),
            max_renewals: file
                .exceptions
                .max_renewals
                .unwrap_or(defaults.max_renewals),
            max_active_per_rule: file
                .exceptions
                .max_active_per_rule
                .unwrap_or(defaults.max_active_per_rule),
        };
        if !(1..=365).contains(&exceptions.max_lifetime_days) {
            return Err(ConfigError::Value(
                "[exceptions] max_lifetime_days must be between 1 and 365: exceptions must expire"
                    .into(),
            ));
        }
        let schedules = file.schedules.resolve()?;
        let token = flags
            .token
            .or(file.token)
            .filter(|t| !t.expose_secret().is_empty());
        let db = Location::parse(flags.db.or(file.db).as_deref().unwrap_or(DEFAULT_DB))
            .map_err(|e| ConfigError::Value(e.to_string()))?;
        let lease_seconds = file
            .lease_seconds
            .unwrap_or((crate::store::pg::lease::DEFAULT_TTL_MS / 1000) as u32);
        if !(3..=300).contains(&lease_seconds) {
            return Err(ConfigError::Value(format!(
                "lease_seconds = {lease_seconds}: a lease must last between 3 and 300 seconds (a crashed leader is replaced within about 1.3 times it; the default 15 suits most)"
            )));
        }
        if let Some(t) = &token
            && t.expose_secret().len() < 16
        {
            return Err(ConfigError::Value(
                "the API token must be at least 16 characters; generate one with `openssl rand -hex 24`".into(),
            ));
        }
        Ok(Config {
            otlp_grpc_listen: file.otlp_grpc_listen,
            node: flags
                .node
                .unwrap_or_else(crate::store::pg::lease::host_name),
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
            db,
            rules: flags
                .rules
                .or(file.rules)
                .unwrap_or_else(|| DEFAULT_RULES.into()),
            token,
            retention_days,
            max_body_bytes: file.max_body_bytes.unwrap_or(16 << 20),
            max_line_bytes: file.max_line_bytes.unwrap_or(1 << 20),
            max_future_skew_secs: file.max_future_skew_secs.unwrap_or(15 * 60),
            lease_ttl_ms: lease_seconds as i64 * 1000,
            clock: flags.clock.or(file.clock).unwrap_or_default(),
            tails,
            gateway_dbs,
            aliases: file.identity.aliases,
            quota_per_unit,
            formats,
            engine: crate::engine::EngineParams {
                analysis: crate::lanes::LaneParams {
                    customer_facing_routes: file.customer_facing_routes.clone(),
                    ..file.analysis
                },
                baselines: file.baselines,
                recalibration: file.recalibration,
            },
            routing: file.routing,
            schedules,
            customer_facing_routes: file.customer_facing_routes,
            exceptions,
            channels: crate::notify::config::resolve(file.channel)?,
            dashboard_url: dashboard_url(file.dashboard_url)?,
        })
    }
}

/// `dashboard_url`, checked: an http(s) URL, or nothing.
fn dashboard_url(raw: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(raw) = raw.map(|r| r.trim().to_string()).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    match reqwest::Url::parse(&raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(Some(raw)),
        _ => Err(ConfigError::Value(format!(
            "dashboard_url {raw:?} must be an http:// or https:// URL, such as https://driftwarden.example.com/"
        ))),
    }
}

/// Split `PATH[:FORMAT]`. A suffix after the last colon counts as a format only if it
/// holds no path separator, so `/logs/a:b/usage.log` stays a path.
pub fn split_tail_arg(raw: &str) -> (&str, &str) {
    match raw.rsplit_once(':') {
        Some((path, format)) if !format.is_empty() && !format.contains('/') && !path.is_empty() => {
            (path, format)
        }
        _ => (raw, "native"),
    }
}

#[allow(clippy::too_many_arguments)]
fn db_spec(
    url: &str,
    flavour: Flavour,
    table: String,
    start: Option<&str>,
    poll_ms: Option<u64>,
    batch_rows: Option<u32>,
    channels: BTreeMap<i64, String>,
) -> Result<DbSpec, ConfigError> {
    let url = crate::dbconn::url_from(url, "gateway database URL").map_err(ConfigError::Value)?;
    let spec = DbSpec {
        start: start
            .unwrap_or("newest")
            .parse::<DbStart>()
            .map_err(|m| ConfigError::Value(format!("gateway database start: {m}")))?,
        url,
        flavour,
        table,
        poll: std::time::Duration::from_millis(poll_ms.unwrap_or(2000).max(50)),
        batch_rows: batch_rows.unwrap_or(5000).clamp(1, 100_000),
        channels,
    };
    spec.validate()
        .map_err(|e| ConfigError::Value(e.to_string()))?;
    Ok(spec)
}

fn tail_spec(
    path: PathBuf,
    format: &str,
    start: StartAt,
    formats: &BTreeMap<String, Arc<Mapping>>,
) -> Result<TailSpec, ConfigError> {
    let resolved = Format::by_name(format, formats)
        .map_err(|m| ConfigError::Value(format!("tail {}: {m}", path.display())))?;
    Ok(TailSpec {
        path: canonical_dir(path),
        format_name: format.to_string(),
        format: resolved,
        start,
    })
}

/// The path with its directory made absolute and free of `.`/`..`/links, so that
/// `./usage.log` and `usage.log` share one checkpoint. The file itself may not exist
/// yet (and may be replaced by rotation), so only the directory is resolved.
fn canonical_dir(path: PathBuf) -> PathBuf {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match (std::fs::canonicalize(&dir), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_defaults_fill_the_rest() {
        let file: FileConfig = toml::from_str(
            r#"
listen = "0.0.0.0:9000"
db = "/var/lib/dw.db"
[[tail]]
path = "/var/log/a.jsonl"
format = "litellm"
start = "end"
[formats.router]
kind = "csv"
[formats.router.fields]
ts = "time"
model = "model"
"#,
        )
        .unwrap();
        let flags = Overrides {
            db: Some("/tmp/x.db".into()),
            tails: vec!["/var/log/b.csv:router".into()],
            ..Overrides::default()
        };
        let c = Config::resolve(file, flags).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.db.sqlite_path(), Some(Path::new("/tmp/x.db")));
        assert_eq!(c.rules, PathBuf::from("rules"));
        assert_eq!(c.retention_days, 7);
        assert_eq!(c.tails.len(), 2);
        assert_eq!(c.tails[0].start, StartAt::End);
        assert_eq!(c.tails[1].format_name, "router");
        assert_eq!(c.tails[1].start, StartAt::Beginning);
    }

    #[test]
    fn empty_config_runs_on_defaults() {
        let c = Config::resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.db.sqlite_path(), Some(Path::new(DEFAULT_DB)));
        assert!(c.tails.is_empty() && c.token.is_none());
    }

    #[test]
    fn mistakes_get_clear_messages() {
        let unknown = toml::from_str::<FileConfig>("listne = \"x\"").unwrap_err();
        assert!(unknown.to_string().contains("unknown field"), "{unknown}");
        let flags = Overrides {
            tails: vec!["/x.log:nope".into()],
            ..Overrides::default()
        };
        let err = Config::resolve(FileConfig::default(), flags).unwrap_err();
        assert!(err.to_string().contains("unknown format \"nope\""), "{err}");
        let flags = Overrides {
            token: Some("short".into()),
            ..Overrides::default()
        };
        let err = Config::resolve(FileConfig::default(), flags).unwrap_err();
        assert!(err.to_string().contains("at least 16"), "{err}");
        let postgres = |token: Option<&str>| Overrides {
            db: Some("postgres://dw:pw@db.internal/dw".into()),
            token: token.map(Into::into),
            ..Overrides::default()
        };
        let lease = |seconds: u32| FileConfig {
            lease_seconds: Some(seconds),
            ..FileConfig::default()
        };
        let err = Config::resolve(lease(2), Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("between 3 and 300"), "{err}");
        let c = Config::resolve(lease(5), Overrides::default()).unwrap();
        assert_eq!(c.lease_ttl_ms, 5_000);
        let c = Config::resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(c.lease_ttl_ms, 15_000);
        // Offline commands read a PostgreSQL store without a token; `serve` refuses
        // to start replicas without one (tests/suite/cli.rs).
        assert!(Config::resolve(FileConfig::default(), postgres(None)).is_ok());
        let c = Config::resolve(FileConfig::default(), postgres(Some("0123456789abcdef"))).unwrap();
        assert!(c.db.sqlite_path().is_none());
    }

    #[test]
    fn gateway_db_from_file_and_flags() {
        let file: FileConfig = toml::from_str(
            r#"
[[gateway_db]]
url = "postgres://reader:pw@db:5432/newapi"
flavour = "oneapi"
start = "first"
channels = { "7" = "azure-east" }
"#,
        )
        .unwrap();
        let flags = Overrides {
            gateway_dbs: vec!["sqlite:///data/one-api.db".into()],
            gateway_db_start: Some("2026-06-01T00:00:00Z".into()),
            ..Overrides::default()
        };
        let c = Config::resolve(file, flags).unwrap();
        assert_eq!(c.gateway_dbs.len(), 2);
        assert_eq!(c.gateway_dbs[0].flavour, Flavour::Oneapi);
        assert_eq!(
            c.gateway_dbs[0].channels.get(&7).map(String::as_str),
            Some("azure-east")
        );
        assert!(matches!(c.gateway_dbs[1].start, DbStart::Since(_)));
        assert_eq!(c.gateway_dbs[1].table, "logs");
        assert!(!format!("{:?}", c.gateway_dbs[0]).contains("pw"));
        let bad = Overrides {
            gateway_dbs: vec!["redis://x".into()],
            ..Overrides::default()
        };
        let err = Config::resolve(FileConfig::default(), bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("must start with sqlite://"), "{err}");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let flags = Overrides {
            token: Some("0123456789abcdef-very-secret".into()),
            gateway_dbs: vec!["postgres://u:hunter2@h/db".into()],
            ..Overrides::default()
        };
        let text = format!(
            "{flags:?} {:?}",
            Config::resolve(FileConfig::default(), flags.clone()).unwrap()
        );
        assert!(
            !text.contains("very-secret") && !text.contains("hunter2"),
            "{text}"
        );
    }

    #[test]
    fn spellings_of_one_tailed_file_share_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let a = canonical_dir(dir.path().join("usage.log"));
        let b = canonical_dir(
            dir.path()
                .join(".")
                .join("sub")
                .join("..")
                .join("usage.log"),
        );
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let c = canonical_dir(dir.path().join("sub").join("..").join("usage.log"));
        assert_eq!(a, c);
        assert!(a.is_absolute());
        assert_eq!(
            b.file_name(),
            a.file_name(),
            "a missing directory is kept as given"
        );
    }

    #[test]
    fn exception_limits_and_customer_facing_routes() {
        let c = Config::resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(c.exceptions, crate::exceptions::Policy::default());
        let file: FileConfig =
            toml::from_str("customer_facing_routes = [\"chat\"]\n[exceptions]\nmax_renewals = 1\n")
                .unwrap();
        let c = Config::resolve(file, Overrides::default()).unwrap();
        assert_eq!(c.customer_facing_routes, ["chat"]);
        assert_eq!(
            (c.exceptions.max_renewals, c.exceptions.max_lifetime_days),
            (1, 14)
        );
        let file: FileConfig = toml::from_str("[exceptions]\nmax_lifetime_days = 0\n").unwrap();
        let err = Config::resolve(file, Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("must expire"), "{err}");
    }

    #[test]
    fn tail_argument_splitting() {
        assert_eq!(split_tail_arg("/a/b.log"), ("/a/b.log", "native"));
        assert_eq!(split_tail_arg("/a/b.log:litellm"), ("/a/b.log", "litellm"));
        assert_eq!(split_tail_arg("/a:b/c.log"), ("/a:b/c.log", "native"));
    }
}
