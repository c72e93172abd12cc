//! `driftwarden exceptions add|list|renew|revoke|audit`: the exception registry of a
//! running daemon, over its HTTP API.

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{Client, ClientArgs};

/// Suppress notification (never recording) of a rule's alerts in a scope, for a while.
#[derive(Debug, Args)]
pub struct ExceptionsArgs {
    #[command(subcommand)]
    command: ExceptionsCommand,
}

#[derive(Debug, Subcommand)]
enum ExceptionsCommand {
    /// Add an exception. It always expires (at most max_lifetime_days, default 14).
    ///
    /// A scope value * matches any value, but such an exception never silences a
    /// top-tier (rank 1) alert: name the exact scope for that.
    ///
    /// Example: driftwarden exceptions add --rule cost-per-request --scope model=gpt-4o
    /// --reason "nightly batch re-embeds the catalogue" --owner ana --ticket OPS-42 --for 7d
    Add(AddArgs),
    /// List active exceptions (all of them with --all), newest first.
    ///
    /// Example: driftwarden exceptions list --all
    List(ListArgs),
    /// Extend an exception. Renewals are limited (max_renewals, default 2): past that,
    /// fix the rule instead.
    ///
    /// Example: driftwarden exceptions renew 3 --for 7d
    Renew(RenewArgs),
    /// Revoke an exception now; its rule's alerts are notified again.
    ///
    /// Example: driftwarden exceptions revoke 3
    Revoke(IdArgs),
    /// Show every change to an exception: created, renewed, revoked, expired.
    ///
    /// Example: driftwarden exceptions audit 3
    Audit(IdArgs),
}

#[derive(Debug, Args)]
struct AddArgs {
    /// The rule whose alerts to suppress.
    #[arg(long)]
    rule: String,
    /// DIM=VALUE, where DIM is model, route, tenant or provider and VALUE may be *;
    /// repeatable. None: every scope of the rule.
    #[arg(long, value_name = "DIM=VALUE")]
    scope: Vec<String>,
    /// Why these alerts may be ignored for now.
    #[arg(long)]
    reason: String,
    /// Who answers for the exception.
    #[arg(long)]
    owner: String,
    /// A ticket tracking the fix.
    #[arg(long)]
    ticket: Option<String>,
    /// How long it runs: 7d, 36h, 90m.
    #[arg(
        long = "for",
        value_name = "DURATION",
        required_unless_present = "expires",
        conflicts_with = "expires"
    )]
    duration: Option<String>,
    /// When it expires (RFC 3339), instead of --for.
    #[arg(long, value_name = "TIME")]
    expires: Option<String>,
    #[command(flatten)]
    actor: ActorArgs,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Include expired and revoked exceptions.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct RenewArgs {
    /// The exception's id (see `exceptions list`).
    id: i64,
    /// How much longer: 7d, 36h, 90m.
    #[arg(long = "for", value_name = "DURATION")]
    duration: String,
    #[command(flatten)]
    actor: ActorArgs,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct IdArgs {
    /// The exception's id (see `exceptions list`).
    id: i64,
    #[command(flatten)]
    actor: ActorArgs,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Args)]
struct ActorArgs {
    /// Who makes the change, for the audit log [default: $USER]
    #[arg(long, env = "USER", hide_env_values = true)]
    actor: Option<String>,
}

/// Run an `exceptions` subcommand.
pub fn run(args: ExceptionsArgs) -> Result<()> {
    match args.command {
        ExceptionsCommand::Add(a) => add(a),
        ExceptionsCommand::List(a) => list(a),
        ExceptionsCommand::Renew(a) => renew(a),
        ExceptionsCommand::Revoke(a) => revoke(a),
        ExceptionsCommand::Audit(a) => audit(a),
    }
}

fn add(args: AddArgs) -> Result<()> {
    let mut scope = serde_json::Map::new();
    for pair in &args.scope {
        let (dim, value) = pair.split_once('=').with_context(|| {
            format!("--scope {pair:?} must be DIM=VALUE, e.g. model=gpt-4o or route=*")
        })?;
        scope.insert(dim.to_string(), json!(value));
    }
    let mut body = json!({
        "rule": args.rule,
        "scope": scope,
        "reason": args.reason,
        "owner": args.owner,
        "ticket": args.ticket,
    });
    // clap makes --for and --expires exclusive and requires one of them.
    match (&args.duration, &args.expires) {
        (Some(d), _) => body["for"] = json!(d),
        (None, t) => body["expires_at"] = json!(t),
    }
    if let Some(a) = &args.actor.actor {
        body["actor"] = json!(a);
    }
    let answer = Client::new(&args.client)?.post("/v1/exceptions", &body)?;
    let e = &answer["exception"];
    println!(
        "created exception {}: rule {} scope {} until {}",
        e["id"],
        text(&e["rule"]),
        scope_text(&e["scope"]),
        text(&e["expires_at"])
    );
    for w in answer["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", text(w));
    }
    Ok(())
}

fn list(args: ListArgs) -> Result<()> {
    let path = if args.all {
        "/v1/exceptions"
    } else {
        "/v1/exceptions?active=true"
    };
    let answer = Client::new(&args.client)?.get(path)?;
    let rows = answer["exceptions"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no {}exceptions", if args.all { "" } else { "active " });
        return Ok(());
    }
    println!(
        "{:>4}  {:<8} {:<24} {:<28} {:<20} {:>8} {:>6}  {:<12} REASON",
        "ID", "STATUS", "RULE", "SCOPE", "EXPIRES", "RENEWALS", "HITS", "OWNER"
    );
    for e in rows {
        println!(
            "{:>4}  {:<8} {:<24} {:<28} {:<20} {:>8} {:>6}  {:<12} {}",
            e["id"],
            text(&e["status"]),
            text(&e["rule"]),
            scope_text(&e["scope"]),
            text(&e["expires_at"]),
            e["renewals"],
            e["hits"],
            text(&e["owner"]),
            text(&e["reason"])
        );
    }
    Ok(())
}

fn renew(args: RenewArgs) -> Result<()> {
    let mut body = json!({ "for": args.duration });
    if let Some(a) = &args.actor.actor {
        body["actor"] = json!(a);
    }
    let answer =
        Client::new(&args.client)?.post(&format!("/v1/exceptions/{}/renew", args.id), &body)?;
    let e = &answer["exception"];
    println!(
        "renewed exception {} until {} (renewal {})",
        e["id"],
        text(&e["expires_at"]),
        e["renewals"]
    );
    Ok(())
}

fn revoke(args: IdArgs) -> Result<()> {
    let query: Vec<(&str, &str)> = args
        .actor
        .actor
        .iter()
        .map(|a| ("actor", a.as_str()))
        .collect();
    let answer =
        Client::new(&args.client)?.delete(&format!("/v1/exceptions/{}", args.id), &query)?;
    println!(
        "revoked exception {}; its alerts are notified again",
        answer["exception"]["id"]
    );
    Ok(())
}

fn audit(args: IdArgs) -> Result<()> {
    let answer = Client::new(&args.client)?.get(&format!("/v1/exceptions/{}/audit", args.id))?;
    for a in answer["audit"].as_array().into_iter().flatten() {
        println!(
            "{}  {:<8} {:<16} {}",
            text(&a["at"]),
            text(&a["action"]),
            text(&a["actor"]),
            a["details"]
        );
    }
    Ok(())
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// `model=gpt-4o,route=*`, or `all` for an empty matcher.
fn scope_text(v: &Value) -> String {
    let parts: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", text(v)))
        .collect();
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(",")
    }
}
