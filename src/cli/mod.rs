//! The command line: `serve`, `import`, `check`, `replay` and `digest` work on files and the
//! store; `recalibrate`, `changes`, `exceptions` and `health` talk to a running daemon over HTTP;
//! `generate` writes simulated traffic; `demo` plays a story of drifts against a
//! simulated gateway.

mod alerts;
mod client;
mod demo;
mod digest;
mod exceptions;
mod generate;
mod replay;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::{ClockMode, Config, FileConfig, Overrides};
use crate::domain::{ChangeKind, Secret};
use crate::pricing::PriceTable;
use crate::sources::gateway_db::Flavour;
use crate::sources::tail::StartAt;

/// driftwarden watches an LLM gateway's usage stream and tells you, at the right
/// volume, when cost, structure or answer quality drift.
#[derive(Debug, Parser)]
#[command(name = "driftwarden", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: tail usage logs, accept webhooks, store events.
    ///
    /// Runs with no config at all: SQLite at ./driftwarden.db, HTTP on 127.0.0.1:7878,
    /// rules from ./rules (else the shipped rules built in). Write endpoints need the API token: --token or
    /// DRIFTWARDEN_TOKEN, else one is generated into driftwarden.token beside the database.
    ///
    /// Example: driftwarden serve --tail /var/log/gateway/usage.jsonl:litellm
    ///
    /// Example: driftwarden serve --gateway-db sqlite:///data/one-api.db
    Serve(ServeArgs),
    /// Read a usage log file once, to its end, into the store, and exit.
    ///
    /// Resumes from the file's checkpoint, so running it again imports only new lines.
    ///
    /// Example: driftwarden import router.csv --format router --config driftwarden.toml
    Import(ImportArgs),
    /// Validate the config file and the rules directory, then exit (non-zero on errors).
    ///
    /// Example: driftwarden check --config driftwarden.toml --rules rules
    Check(StoreArgs),
    /// Post a change event (deploy, model bump, config change) to a running daemon.
    ///
    /// The series in its scope start a new baseline epoch, so the change is not
    /// mistaken for drift. Call it from your deploy pipeline.
    ///
    /// Example: driftwarden recalibrate --kind deploy --scope route=chat --note "prompt v2"
    Recalibrate(RecalibrateArgs),
    /// List a running daemon's alerts (suppressed ones too), newest first.
    ///
    /// Each line shows when it started, its state, tier, rule, kind and scope, and the
    /// summary a person reads first; --json prints the evidence too.
    ///
    /// Example: driftwarden alerts --state firing --tier page
    Alerts(alerts::AlertsArgs),
    /// List change events known to a running daemon, newest first.
    ///
    /// Example: driftwarden changes --since 2026-06-01T00:00:00Z
    Changes(ChangesArgs),
    /// Add, list, renew or revoke exceptions on a running daemon.
    ///
    /// An exception stops notification (never recording) of a rule's alerts in a
    /// scope until it expires; renewals are limited and every change is audited.
    ///
    /// Example: driftwarden exceptions add --rule cost-per-request --scope model=gpt-4o
    /// --reason "nightly batch" --owner ana --for 7d
    Exceptions(exceptions::ExceptionsArgs),
    /// Write a synthetic gateway log (seeded, deterministic) for trying `replay` or `import`.
    ///
    /// Simulates a gateway's traffic (weekly rhythm, 3 models, 4 routes, tenants, errors,
    /// evals) and plants the named scenario's drift, mostly on day 15. Writes usage
    /// events and eval scores as native JSONL, the announced change events, and
    /// optionally a New API `logs` table to follow with --gateway-db.
    ///
    /// Example: driftwarden generate --scenario silent_model_bump --seed 7 --events usage.jsonl --evals evals.jsonl --changes changes.jsonl
    Generate(generate::GenerateArgs),
    /// Run the serve pipeline over usage, eval and change files on a data clock, as
    /// fast as it goes, and print one JSON alert line per firing and resolve.
    ///
    /// The same adapters, store, lanes, baselines, detectors, tiers and lifecycle as
    /// `serve`: a backtest shows what production would have sent. The store is a
    /// temporary file unless --db is given. Summary on stderr.
    ///
    /// Example: driftwarden replay --events usage.jsonl --evals evals.jsonl --changes changes.jsonl
    Replay(replay::ReplayArgs),
    /// Try driftwarden in one command: the daemon on a temporary store follows a
    /// simulated New API gateway while a story of drifts plays in under two minutes.
    ///
    /// Days of normal traffic first, then two days of data time on an accelerated clock:
    /// an announced deploy, a silent model bump, evals switched off while cost falls, a
    /// one-tenant spike and a global error burst. Alerts print as they would reach
    /// Slack and email; the dashboard URL is printed at start. Nothing to configure.
    ///
    /// Example: driftwarden demo --listen 127.0.0.1:0 --exit
    Demo(demo::DemoArgs),
    /// Print the shipped rules, or write them into a new directory to edit.
    ///
    /// The binary carries the rules it was built with (drift rules, tiers, prices) and
    /// runs on them when no --rules is given and ./rules does not exist.
    ///
    /// Example: driftwarden rules --write rules
    Rules(RulesArgs),
    /// Print the daily digest of the past 24 hours from the store, and queue it for
    /// the digest tier's channels unless --print.
    ///
    /// The same digest `[schedules] digest` sends every day: digest-tier alerts,
    /// change events with their impact reports, exceptions by hits and age, and spend
    /// by model, route and tenant split into volume, mix and rate effects.
    ///
    /// Example: driftwarden digest --db driftwarden.db --print
    Digest(digest::DigestArgs),
    /// Ask a running daemon whether it is healthy (GET /healthz); exit 0 if so.
    ///
    /// For container health checks in images without curl.
    ///
    /// Example: driftwarden health --url http://127.0.0.1:7878
    Health(client::ClientArgs),
}

#[derive(Debug, Args)]
struct RecalibrateArgs {
    /// What changed.
    #[arg(long, value_enum)]
    kind: ChangeKind,
    /// DIM=VALUE, where DIM is model, route, tenant or provider; repeatable. None: everything.
    #[arg(long, value_name = "DIM=VALUE")]
    scope: Vec<String>,
    /// What changed, in words (shown in change-impact reports).
    #[arg(long, default_value = "")]
    note: String,
    /// When it happened (RFC 3339) [default: now]
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    #[command(flatten)]
    client: client::ClientArgs,
}

#[derive(Debug, Args)]
struct ChangesArgs {
    /// Only changes at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[command(flatten)]
    client: client::ClientArgs,
}

/// `rules`: one of its two actions.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct RulesArgs {
    /// Print every shipped rules file to stdout, each under a `# ==> NAME <==` line.
    #[arg(long)]
    print: bool,
    /// Write the shipped rules into DIR (made if missing; an existing file is never
    /// overwritten), to edit and pass as --rules DIR.
    #[arg(long, value_name = "DIR")]
    write: Option<PathBuf>,
}

/// Options shared by the commands that open the store.
#[derive(Debug, Args)]
struct StoreArgs {
    /// TOML config file; flags override its values.
    #[arg(long, short, value_name = "FILE", env = "DRIFTWARDEN_CONFIG")]
    config: Option<PathBuf>,
    /// driftwarden's database: a SQLite file [default: driftwarden.db], or
    /// postgres://user@host/db (or env:VAR naming one) for several replicas sharing
    /// one PostgreSQL; see docs/replicas.md
    #[arg(
        long,
        env = "DRIFTWARDEN_DB",
        hide_env_values = true,
        value_name = "PATH|URL"
    )]
    db: Option<String>,
    /// Rules directory holding pricing.toml [default: rules, else the shipped rules
    /// compiled into the binary]
    #[arg(long, value_name = "DIR")]
    rules: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address for the HTTP API [default: 127.0.0.1:7878]
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Follow a usage log; FORMAT is native (default), newapi, oneapi, litellm,
    /// evals, or a [formats.NAME] from the config. Repeatable.
    #[arg(long = "tail", value_name = "PATH[:FORMAT]")]
    tails: Vec<String>,
    /// Where to start a file that has no checkpoint yet.
    #[arg(long, value_enum, value_name = "WHERE")]
    tail_start: Option<StartAt>,
    /// Follow a New API / One API usage table: sqlite:///path/one-api.db,
    /// postgres://user@host/db or mysql://user@host/db, or env:VAR to read the URL
    /// (with its password) from the environment. Repeatable. Read-only.
    #[arg(long = "gateway-db", value_name = "URL")]
    gateway_dbs: Vec<Secret>,
    /// Which gateway wrote the table [default: newapi]
    #[arg(long, value_enum, value_name = "FLAVOUR")]
    gateway_db_flavour: Option<Flavour>,
    /// The usage table's name [default: logs]
    #[arg(long, value_name = "TABLE")]
    gateway_db_table: Option<String>,
    /// Where a database with no cursor begins: newest (default), first, or a time
    /// such as 2026-06-01T00:00:00Z.
    #[arg(long, value_name = "WHERE")]
    gateway_db_start: Option<String>,
    /// API token for write endpoints (at least 16 characters).
    #[arg(long, env = "DRIFTWARDEN_TOKEN", hide_env_values = true)]
    token: Option<Secret>,
    /// This replica's node name, under which it keeps the checkpoints of the files
    /// it tails when several replicas share one PostgreSQL (on Kubernetes, the
    /// pod's spec.nodeName) [default: the host name]
    #[arg(long, env = "DRIFTWARDEN_NODE", value_name = "NAME")]
    node: Option<String>,
    /// Days to keep raw events (aggregates are kept longer) [default: 7]
    #[arg(long, value_name = "DAYS")]
    retention_days: Option<u32>,
    /// The clock alerts are decided on: wall (default), or data to judge and notify
    /// a tailed backlog exactly as `replay` would (backtests through the live path).
    #[arg(long, value_enum, value_name = "CLOCK")]
    clock: Option<ClockMode>,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// The usage log to read.
    file: PathBuf,
    /// Record format (see `serve --tail`).
    #[arg(long, default_value = "native")]
    format: String,
    #[command(flatten)]
    store: StoreArgs,
}

impl StoreArgs {
    fn resolve(&self, mut overrides: Overrides) -> Result<Config> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let rules_given = self.rules.is_some() || file.rules.is_some();
        overrides.db = self.db.clone();
        overrides.rules = self.rules.clone();
        let mut config = Config::resolve(file, overrides)?;
        // A binary alone (a sidecar image, a download) has no ./rules: it runs on the
        // rules it was built with. A directory named by flag or config must exist.
        if !rules_given && !config.rules.exists() {
            config.rules = crate::shipped_rules::private_dir()?;
            tracing::info!(
                dir = %config.rules.display(),
                "no rules directory (./rules): using the shipped rules compiled into the binary, written to a private directory removed at exit (`driftwarden rules --write rules` starts one to edit)"
            );
        }
        Ok(config)
    }
}

/// Parse the command line and run the command.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        // The demo's output is its story and its alerts: logs only for warnings.
        Command::Demo(_) => crate::telemetry::init_tracing_with("warn"),
        _ => crate::telemetry::init_tracing(),
    }
    let done = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Import(args) => import(args),
        Command::Check(args) => check(args),
        Command::Recalibrate(args) => recalibrate(args),
        Command::Changes(args) => changes(args),
        Command::Alerts(args) => alerts::alerts(args),
        Command::Exceptions(args) => exceptions::run(args),
        Command::Generate(args) => generate::generate(args),
        Command::Replay(args) => replay::replay(args),
        Command::Digest(args) => digest::digest(args),
        Command::Health(args) => health(args),
        Command::Demo(args) => demo::demo(args),
        Command::Rules(args) => rules(args),
    };
    crate::shipped_rules::remove_private();
    done
}

fn rules(args: RulesArgs) -> Result<()> {
    if let Some(dir) = args.write {
        for path in crate::shipped_rules::write_new(&dir)? {
            println!("wrote {}", path.display());
        }
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for (name, text) in crate::shipped_rules::FILES {
        writeln!(out, "# ==> {name} <==\n{text}")?;
    }
    Ok(())
}

fn recalibrate(args: RecalibrateArgs) -> Result<()> {
    let mut scope = serde_json::Map::new();
    for pair in &args.scope {
        let (dim, value) = pair
            .split_once('=')
            .with_context(|| format!("--scope {pair:?} must be DIM=VALUE, e.g. route=chat"))?;
        scope.insert(
            dim.to_string(),
            serde_json::Value::String(value.to_string()),
        );
    }
    let mut body = serde_json::json!({
        "kind": args.kind.as_str(),
        "scope": scope,
        "note": args.note,
    });
    if let Some(at) = &args.at {
        body["ts"] = serde_json::Value::String(at.clone());
    }
    let answer = client::Client::new(&args.client)?.post("/recalibrate", &body)?;
    let verb = if answer["duplicates"].as_u64() == Some(1) {
        "already recorded"
    } else {
        "recorded"
    };
    println!("{verb}: {}", answer["change"]);
    Ok(())
}

fn changes(args: ChangesArgs) -> Result<()> {
    let mut path = format!("/v1/changes?limit={}", args.limit);
    if let Some(since) = &args.since {
        path.push_str(&format!("&since={since}"));
    }
    let answer = client::Client::new(&args.client)?.get(&path)?;
    let rows = answer["changes"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no change events");
    }
    for c in rows {
        let at = chrono::DateTime::from_timestamp_millis(c["ts_ms"].as_i64().unwrap_or(0))
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        println!(
            "{at}  {:<13} {:<30} {}",
            c["kind"].as_str().unwrap_or(""),
            c["scope"].to_string(),
            c["note"].as_str().unwrap_or("")
        );
        if let Some(summary) = c["impact"]["summary"].as_str() {
            println!("    impact: {summary}");
        }
    }
    Ok(())
}

fn health(args: client::ClientArgs) -> Result<()> {
    let answer = client::Client::new(&args)?.get("/healthz")?;
    println!("{answer}");
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let config = args.store.resolve(Overrides {
        listen: args.listen,
        token: args.token,
        node: args.node,
        retention_days: args.retention_days,
        clock: args.clock,
        tails: args.tails,
        tail_start: args.tail_start,
        gateway_dbs: args.gateway_dbs,
        gateway_db_flavour: args.gateway_db_flavour,
        gateway_db_table: args.gateway_db_table,
        gateway_db_start: args.gateway_db_start,
        ..Overrides::default()
    })?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(crate::daemon::serve(config, shutdown_signal()))?;
    Ok(())
}

fn import(args: ImportArgs) -> Result<()> {
    let tail = format!("{}:{}", args.file.display(), args.format);
    let config = args.store.resolve(Overrides {
        tails: vec![tail],
        ..Overrides::default()
    })?;
    let spec = config.tails[0].clone();
    config.db.migrate()?;
    let before = crate::store::queries::stats(&config.db)?.events;
    let report = crate::daemon::import(&config, spec)?;
    let added = report.stats.events.saturating_sub(before);
    println!(
        "imported {added} events in {:.2}s ({:.0} events/s); store holds {} events, {} eval scores, {} dead letters",
        report.seconds,
        added as f64 / report.seconds.max(1e-9),
        report.stats.events,
        report.stats.evals,
        report.stats.dead_letters
    );
    Ok(())
}

fn check(args: StoreArgs) -> Result<()> {
    let config = args.resolve(Overrides::default())?;
    let prices = PriceTable::load_dir(&config.rules)?;
    let (tiers, rules) = crate::analysis::load_rules(&config, &config.rules)?;
    println!(
        "ok: config valid; {} tail source(s); {} gateway database(s); {} mapped format(s); {} model(s) priced in {}; {} tier(s); {} detector rule(s)",
        config.tails.len(),
        config.gateway_dbs.len(),
        config.formats.len(),
        prices.len(),
        config.rules.join("pricing.toml").display(),
        tiers.defs().len(),
        rules.rules.len()
    );
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
