//! `driftwarden generate`: write a simulated gateway's usage log (and its evals and
//! announced changes) for trying `replay` or `import` without a real gateway.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

use crate::sim::{self, NewApiLogWriter, Profile, SimRecord};

/// Rows per New API transaction: big enough to be fast, small enough to stay in memory.
const NEWAPI_BATCH: usize = 10_000;

#[derive(Debug, Args)]
pub(super) struct GenerateArgs {
    /// Scenario: a quiet run, or one with a planted drift and its ground truth.
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(sim::scenarios::NAMES))]
    scenario: String,
    /// Random seed: the same seed writes the same files.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Days of traffic (drifts start on day 15, some earlier) [default: 16]
    #[arg(long, value_name = "D")]
    days: Option<f64>,
    /// Number of tenants [default: 20]
    #[arg(long, value_name = "N")]
    tenants: Option<u32>,
    /// Mean requests per minute at the weekday peak [default: 60]
    #[arg(long, value_name = "RPM")]
    rate: Option<f64>,
    /// Usage events, as native JSONL.
    #[arg(long, value_name = "FILE")]
    events: PathBuf,
    /// Eval scores, as native JSONL.
    #[arg(long, value_name = "FILE")]
    evals: Option<PathBuf>,
    /// The scenario's announced change events, as JSONL `/recalibrate` bodies.
    #[arg(long, value_name = "FILE")]
    changes: Option<PathBuf>,
    /// The scenario's ground truth (JSON): what a team must be told and by when,
    /// for `driftwarden replay --truth`.
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
    /// Also write the usage events as rows of a New API `logs` table in this SQLite file.
    #[arg(long, value_name = "FILE")]
    newapi_db: Option<PathBuf>,
}

pub(super) fn generate(args: GenerateArgs) -> Result<()> {
    let defaults = Profile::default();
    let profile = Profile {
        days: args.days.unwrap_or(defaults.days),
        tenants: args.tenants.unwrap_or(defaults.tenants),
        peak_rpm: args.rate.unwrap_or(defaults.peak_rpm),
        ..defaults
    };
    let scenario = sim::scenarios::by_name(&args.scenario, profile)?;
    if let Some(first) = scenario.first_injection_ms()
        && first >= scenario.profile.end_ms()
    {
        eprintln!(
            "warning: scenario {} plants its drift after the last day; raise --days to see it",
            scenario.name
        );
    }
    let started = std::time::Instant::now();
    let records = scenario.generator(args.seed)?;
    let (events, evals) = match &args.newapi_db {
        None => sim::write_records_jsonl(records, &args.events, args.evals.as_deref())?,
        Some(db) => {
            // Two passes over the same seed: the stream is deterministic, so both
            // outputs hold exactly the same requests.
            let mut writer = NewApiLogWriter::open(db, &scenario.profile)?;
            let mut batch = Vec::with_capacity(NEWAPI_BATCH);
            for record in scenario.generator(args.seed)? {
                if let SimRecord::Usage(e) = record {
                    batch.push(e);
                    if batch.len() == NEWAPI_BATCH {
                        writer.insert(&batch)?;
                        batch.clear();
                    }
                }
            }
            writer.insert(&batch)?;
            let channels: Vec<String> = writer
                .channels()
                .iter()
                .map(|(name, id)| format!("\"{id}\" = \"{name}\""))
                .collect();
            println!(
                "New API logs in {}; channels for the config: channels = {{ {} }}",
                db.display(),
                channels.join(", ")
            );
            sim::write_records_jsonl(records, &args.events, args.evals.as_deref())?
        }
    };
    if let Some(path) = &args.changes {
        sim::write_changes_jsonl(&scenario.changes, path)
            .with_context(|| format!("writing change events for {}", scenario.name))?;
    }
    if let Some(path) = &args.truth {
        let text = serde_json::to_string_pretty(&scenario.truth).expect("a truth serializes");
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing the ground truth to {}", path.display()))?;
    }
    println!(
        "scenario {} (seed {}): {events} events to {}, {evals} eval scores{}, {} change event(s) in {:.2}s",
        scenario.name,
        args.seed,
        args.events.display(),
        args.evals
            .as_ref()
            .map(|p| format!(" to {}", p.display()))
            .unwrap_or_else(|| " (not written)".to_string()),
        scenario.changes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
