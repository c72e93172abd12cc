//! `driftwarden alerts`: list a running daemon's alerts, suppressed ones included.

use anyhow::Result;
use clap::Args;

use super::client::{Client, ClientArgs};

/// Arguments of `alerts`.
#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// Only alerts in this state: pending, firing or resolved.
    #[arg(long, value_name = "STATE")]
    state: Option<String>,
    /// Only this rule's alerts.
    #[arg(long)]
    rule: Option<String>,
    /// Only this kind (traffic_drift, cost_drift, ...).
    #[arg(long)]
    kind: Option<String>,
    /// Only this tier (page, alert, digest, record).
    #[arg(long)]
    tier: Option<String>,
    /// Only alerts started at or after this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Print the JSON the API returns instead of one line per alert.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// List alerts.
pub fn alerts(args: AlertsArgs) -> Result<()> {
    let mut query = vec![("limit", args.limit.to_string())];
    let filters = [
        ("state", &args.state),
        ("rule", &args.rule),
        ("kind", &args.kind),
        ("tier", &args.tier),
        ("since", &args.since),
    ];
    for (key, value) in filters {
        if let Some(v) = value {
            query.push((key, v.clone()));
        }
    }
    let qs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect();
    let answer = Client::new(&args.client)?.get(&format!("/v1/alerts?{}", qs.join("&")))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let rows = answer["alerts"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no alerts");
    }
    for a in rows {
        let suppressed = match a["suppressed_by"].as_i64() {
            Some(id) => format!(" [suppressed by exception {id}]"),
            None => String::new(),
        };
        println!(
            "{}  {:<8} {:<7} {:<20} {:<18} {}{}\n    {}",
            a["started_at"].as_str().unwrap_or(""),
            a["state"].as_str().unwrap_or(""),
            a["tier"].as_str().unwrap_or("-"),
            a["rule"].as_str().unwrap_or(""),
            a["kind"].as_str().unwrap_or(""),
            a["scope"],
            suppressed,
            a["summary"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// Percent-encode a query value (RFC 3339 times carry `+` and `:`).
fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
