//! `driftwarden replay`: run the serve pipeline over files on a data clock and
//! print one JSON alert line per firing and resolve.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

use super::StoreArgs;
use crate::config::Overrides;
use crate::replay::{ReplayFiles, run};
use crate::sim::{Score, Truth};
use crate::tiers::Tiers;

/// Arguments of `replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Usage log to replay (one record per line, in time order).
    #[arg(long, value_name = "FILE")]
    events: PathBuf,
    /// Format of the usage log: native, newapi, oneapi, litellm or a [formats.NAME].
    #[arg(long, default_value = "native")]
    format: String,
    /// Eval scores (native EvalScore JSON lines), released as the data clock reaches them.
    #[arg(long, value_name = "FILE")]
    evals: Option<PathBuf>,
    /// Change events (one ChangeEvent JSON per line): deploys, model bumps, config changes.
    #[arg(long, value_name = "FILE")]
    changes: Option<PathBuf>,
    /// Also store raw event and eval rows (slower). Without it the replay store keeps
    /// alerts and change reports (and per-minute aggregates when --db names it), and a
    /// resent event or eval counts twice.
    #[arg(long)]
    keep_raw: bool,
    /// Score the replay against a scenario's ground truth (JSON, as written by
    /// `driftwarden generate --truth`): recall, false alarms, the messages each
    /// channel would have received, median delay and tier errors, on stderr.
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
    /// Write every message each channel would have received (after grouping and
    /// budgets) to this file, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    notifications: Option<PathBuf>,
    /// Rules, tiers and prices; the database defaults to a temporary file.
    #[command(flatten)]
    store: StoreArgs,
}

/// Run a replay; alert lines to stdout, the summary to stderr.
pub fn replay(args: ReplayArgs) -> Result<()> {
    // Removed when the replay ends, unless --db names a store to keep.
    let tmp = tempfile::tempdir().context("creating a temporary directory for the replay store")?;
    let mut store = args.store;
    // A store named by --db outlives the replay: it gets the per-minute aggregates the
    // API and the dashboard read.
    let keep_aggregates = store.db.is_some();
    if store.db.is_none() {
        store.db = Some(tmp.path().join("replay.db").display().to_string());
    }
    let config = store.resolve(Overrides::default())?;
    let truth = match &args.truth {
        Some(path) => Some(Truth::load(path)?),
        None => None,
    };
    let mut lines = Vec::new();
    let files = ReplayFiles {
        events: args.events,
        format: args.format,
        evals: args.evals,
        changes: args.changes,
        keep_raw: args.keep_raw,
        keep_aggregates,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_err = None;
    let summary = run(&config, &files, |alert| {
        if truth.is_some() {
            lines.push(alert.clone());
        }
        if write_err.is_none() {
            let line = serde_json::to_string(alert).expect("an alert serializes");
            if let Err(e) = writeln!(out, "{line}") {
                write_err = Some(e);
            }
        }
    })?;
    out.flush().ok();
    if let Some(e) = write_err {
        return Err(e).context("writing alert lines to stdout");
    }
    eprintln!(
        "replayed {} events, {} evals, {} changes in {:.2}s ({:.0} events/s); {} firing, {} updated, {} reopened, {} resolved; {} dead letters, {} duplicates, {} late events, {} unmatched evals, {} evals after their bucket settled",
        summary.events,
        summary.evals,
        summary.changes,
        summary.seconds,
        summary.events_per_second,
        summary.firing,
        summary.updated,
        summary.reopened,
        summary.resolved,
        summary.dead_letters,
        summary.duplicates,
        summary.late_events,
        summary.unmatched_evals,
        summary.late_evals
    );
    if let Some(r) = &summary.resumed {
        match &r.snapshot {
            Some(s) => eprintln!(
                "went on from the store's analysis snapshot (data to {}): {} records of the files it had counted skipped",
                crate::domain::rfc3339_ms::format(s.watermark_ms),
                summary.skipped
            ),
            None => eprintln!(
                "the store held no usable analysis snapshot: the analysis was rebuilt from {:.1} days of its raw events",
                r.rebuilt_days.unwrap_or(0.0)
            ),
        }
    }
    if let Some(s) = &summary.snapshot {
        eprintln!(
            "analysis snapshot left in the store: {} bytes, covering data to {}, stored in {} ms",
            s.bytes,
            crate::domain::rfc3339_ms::format(s.watermark_ms),
            s.write_ms
        );
    }
    let channels: Vec<String> = summary
        .notifications
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    eprintln!(
        "notifications (after grouping and budgets): {}",
        if channels.is_empty() {
            "none".to_string()
        } else {
            channels.join(", ")
        }
    );
    if let Some(path) = &args.notifications {
        let mut text = String::new();
        for s in &summary.sent {
            let m = &s.message;
            let line = serde_json::json!({
                "channel": s.channel,
                "at": crate::domain::rfc3339_ms::format(s.at_ms),
                "title": m.title,
                "tier": m.tier,
                "alerts": m.alerts,
                "text": m.text,
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        std::fs::write(path, text)
            .with_context(|| format!("writing notifications to {}", path.display()))?;
    }
    if let Some(truth) = truth {
        let tiers = Tiers::load(&config.rules)?;
        let names: Vec<String> = tiers.defs().iter().map(|d| d.tier.name.clone()).collect();
        let span = summary.span_ms.unwrap_or_default();
        let score = Score::new(&truth, &lines, &summary.sent, &names, span);
        eprint!("{}", score.report());
    }
    Ok(())
}
