//! `driftwarden digest`: build the daily digest of the past 24 hours from the store
//! now, and queue it for the digest tier's channels or just print it.

use anyhow::{Context as _, Result};
use clap::Args;

use super::StoreArgs;
use crate::config::Overrides;
use crate::notify::message::plain_text;
use crate::schedule::digest::{Digest, enqueue};
use crate::tiers::Tiers;

/// Arguments of `digest`.
#[derive(Debug, Args)]
pub struct DigestArgs {
    /// Print the digest to stdout only; without it the digest is also queued for the
    /// digest tier's channels, which a running daemon delivers.
    #[arg(long)]
    print: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// Build today's digest; print it, and queue it unless `--print`.
pub fn digest(args: DigestArgs) -> Result<()> {
    let config = args.store.resolve(Overrides::default())?;
    anyhow::ensure!(
        config.db.exists(),
        "no database at {}: start the daemon (or pass --db) first",
        config.db
    );
    let tiers = Tiers::load(&config.rules)?;
    let tier = tiers.digest();
    let now = crate::clock::now_ms();
    let message = Digest::build(&config.db, &tier.tier.name, now)
        .with_context(|| format!("reading {}", config.db))?
        .message();
    print!("{}", plain_text(&message));
    if !args.print {
        let queued = enqueue(&mut config.db.side()?, tier, &message, now)?;
        eprintln!(
            "queued for {queued} channel(s) of tier {}: {}",
            tier.tier.name,
            tier.tier.channels.join(", ")
        );
    }
    Ok(())
}
