//! `driftwarden demo`: the daemon, a simulated New API gateway and a story of drifts,
//! in one command and under two minutes.

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use clap::Args;

use crate::demo::{DemoOptions, run};

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub(super) struct DemoArgs {
    /// Seed of the simulated traffic: the same seed plays the same requests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Address for the daemon's HTTP API and dashboard; port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = crate::config::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Quit when the story is over instead of serving the dashboard until Ctrl-C.
    #[arg(long)]
    exit: bool,
    /// Play the story as if the demo started at TIME (RFC 3339, e.g.
    /// 2026-11-29T23:57:30Z): the story's two days end there and the daemon's clock
    /// runs on from it. Default: now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    start: Option<i64>,
}

/// A `--start` that is not an RFC 3339 time; clap prints it under the flag.
#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not an RFC 3339 time: {source}")]
struct NotRfc3339 {
    text: String,
    source: chrono::ParseError,
}

/// An RFC 3339 time as milliseconds since the Unix epoch.
fn parse_time(text: &str) -> Result<i64, NotRfc3339> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|source| NotRfc3339 {
            text: text.to_string(),
            source,
        })
}

pub(super) fn demo(args: DemoArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let opts = DemoOptions {
        seed: args.seed,
        listen: args.listen,
        exit: args.exit,
        start_ms: args.start,
    };
    runtime.block_on(run(opts, super::shutdown_signal()))?;
    Ok(())
}
