//! Replay: the `serve` pipeline on files, on a data clock, as fast as it goes.
//!
//! Records are read with the same adapters, committed to a (temporary) store the
//! same way, and analysed by the same `Analysis`; the only difference is the clock:
//! the newest event time read so far. Eval scores are released when the data
//! clock reaches their time, as they would have arrived live.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::adapters::changes::{ChangeError, parse_change};
use crate::adapters::{Context, Decoder, Format, Record, UnknownFormat};
use crate::alerts::{Delivery, Sent};
use crate::analysis::{Analysis, AnalysisError};
use crate::config::Config;
use crate::domain::{Alert, AlertEvent, ChangeEvent, EvalScore};
use crate::identity::Identity;
use crate::ingest::add_record;
use crate::pricing::{PriceTable, PricingError};
use crate::store::{Batch, Store, StoreError};

/// Records per commit.
const CHUNK: usize = 8192;

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayFiles {
    /// Usage log.
    pub events: PathBuf,
    /// Its format name (`native`, `litellm`, a mapped format, ...).
    pub format: String,
    /// Eval scores (native EvalScore JSON lines).
    pub evals: Option<PathBuf>,
    /// Change events (one ChangeEvent JSON per line).
    pub changes: Option<PathBuf>,
    /// Store raw event and eval rows too (slower; deduplicates resent records).
    pub keep_raw: bool,
    /// Store per-minute aggregates (for a store that outlives the replay; a temporary
    /// one is deleted unread).
    pub keep_aggregates: bool,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// A line of the changes file is not a change event.
    #[error("{path}:{line}: {source}")]
    Change {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        source: ChangeError,
    },
    /// The format name is unknown.
    #[error(transparent)]
    Format(#[from] UnknownFormat),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The alert stage failed.
    #[error(transparent)]
    Alerts(#[from] crate::alerts::AlertError),
    /// The price table failed to load.
    #[error(transparent)]
    Pricing(#[from] PricingError),
    /// Rules, tiers or analysis settings are invalid.
    #[error(transparent)]
    Analysis(#[from] AnalysisError),
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplaySummary {
    /// Usage events read and stored.
    pub events: u64,
    /// Eval scores read and stored.
    pub evals: u64,
    /// Change events read.
    pub changes: u64,
    /// Records refused (in the store's dead letters).
    pub dead_letters: u64,
    /// Duplicate records (same id) counted once.
    pub duplicates: u64,
    /// Firing lines printed.
    pub firing: u64,
    /// Updated lines printed (a consequence joined an incident).
    pub updated: u64,
    /// Reopened lines printed.
    pub reopened: u64,
    /// Resolved lines printed.
    pub resolved: u64,
    /// Events whose bucket had closed when they were read.
    pub late_events: u64,
    /// Evals that matched no open bucket.
    pub unmatched_evals: u64,
    /// Evals timed after their request's bucket settled.
    pub late_evals: u64,
    /// Messages each channel would have received (after grouping and budgets).
    pub notifications: std::collections::BTreeMap<String, u64>,
    /// Those messages, in order.
    #[serde(skip)]
    pub sent: Vec<Sent>,
    /// Time of the first and the last usage event, ms.
    pub span_ms: Option<(i64, i64)>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Usage events per second.
    pub events_per_second: f64,
    /// The analysis snapshot left in a kept store (`--db`), for `serve` to go on from.
    pub snapshot: Option<crate::store::snapshot::SnapshotMeta>,
    /// What the analysis went on from, when the kept store held one (an earlier
    /// replay's, or `serve`'s).
    pub resumed: Option<crate::analysis::Resumed>,
    /// Records of the files the store's analysis had already counted, skipped.
    pub skipped: u64,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Load a changes file.
pub fn read_changes(path: &Path) -> Result<Vec<ChangeEvent>, ReplayError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let c = parse_change(line.as_bytes(), i64::MAX / 4, 0).map_err(|source| {
            ReplayError::Change {
                path: path.display().to_string(),
                line: i + 1,
                source,
            }
        })?;
        out.push(c);
    }
    out.sort_by_key(|c| c.ts_ms);
    Ok(out)
}

/// Evals released in time order as the data clock passes them.
struct EvalStream {
    reader: Option<BufReader<File>>,
    decoder: Decoder,
    next: Option<EvalScore>,
    line: Vec<u8>,
    position: u64,
    dead: Vec<(u64, String, Vec<u8>)>,
}

impl EvalStream {
    fn pull(&mut self) -> std::io::Result<()> {
        while self.next.is_none() {
            let Some(reader) = &mut self.reader else {
                return Ok(());
            };
            self.line.clear();
            if read_line(reader, &mut self.line)? == 0 {
                self.reader = None;
                return Ok(());
            }
            self.position += 1;
            let raw = trim_line(&self.line);
            if raw.is_empty() {
                continue;
            }
            match self.decoder.decode(raw, self.position, i64::MAX / 4) {
                Ok(Some(Record::Eval(e))) => self.next = Some(e),
                Ok(_) => {}
                Err(r) => self.dead.push((self.position, r.0, raw.to_vec())),
            }
        }
        Ok(())
    }

    /// Move every eval at or before `until_ms` into `batch`.
    fn release(&mut self, until_ms: i64, batch: &mut Batch) -> std::io::Result<()> {
        loop {
            self.pull()?;
            match &self.next {
                Some(e) if e.ts_ms <= until_ms => {
                    batch.evals.push(self.next.take().expect("peeked"))
                }
                _ => return Ok(()),
            }
        }
    }
}

/// `BufRead::read_until(b'\n', line)` with the SIMD `memchr`: std's byte search was
/// 2% of a replay's instructions.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut read = 0;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(read);
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        read += take;
        if done {
            return Ok(read);
        }
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    &line[..end]
}

/// Replay `files` into the store at `config.db` (normally a temporary file),
/// handing each firing and resolved line to `emit`.
pub fn run(
    config: &Config,
    files: &ReplayFiles,
    mut emit: impl FnMut(&Alert),
) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    let mut store = Store::open(config.db.lite("replay")?)?
        .with_cardinality_cap(config.engine.analysis.cardinality_cap);
    let mut analysis = Analysis::open(config, Delivery::Count, None)?.snapshot_when_asked();
    let mut summary = ReplaySummary::default();
    // A kept store with history (a replay or `serve` before) is gone on from: its
    // analysis is resumed, and what it counted is skipped. Records of the buckets
    // it left open are in the store when it keeps raw rows, which then deduplicate
    // the files' copies of them; so such a store keeps raw rows.
    let mut counted = (i64::MIN, i64::MIN);
    let mut keep_raw = files.keep_raw;
    if files.keep_aggregates {
        let conn = config.db.reader()?;
        if crate::store::queries::holds_history(&conn)? {
            keep_raw |= crate::store::queries::holds_events(&conn)?;
            let resumed = analysis.resume(&config.db, crate::clock::now_ms())?;
            if let (Some(events), Some(evals)) = (resumed.events_from_ms, resumed.evals_after_ms) {
                counted = (events, evals);
            }
            summary.resumed = Some(resumed);
        }
    }
    if !keep_raw {
        store = store.without_raw_events();
    }
    if !files.keep_aggregates {
        store = store.without_aggregates();
    }
    let salt = store.identity_salt()?;
    let pricing = PriceTable::load_dir(&config.rules)?;
    let ctx = Arc::new(Context {
        pricing: Arc::new(pricing),
        identity: Arc::new(Identity::new(salt, config.aliases.clone())),
        quota_per_unit: config.quota_per_unit,
        // Replayed data is history: no record is "in the future".
        max_future_ms: i64::MAX / 4,
    });
    let format = Format::by_name(&files.format, &config.formats)?;
    let mut decoder = Decoder::new(format, ctx.clone());

    let mut changes = match &files.changes {
        Some(p) => read_changes(p)?,
        None => Vec::new(),
    };
    changes.reverse();
    let mut evals = EvalStream {
        reader: match &files.evals {
            Some(p) => Some(BufReader::with_capacity(
                1 << 20,
                File::open(p).map_err(io_err(p))?,
            )),
            None => None,
        },
        decoder: Decoder::new(Format::Evals, ctx.clone()),
        next: None,
        line: Vec::new(),
        position: 0,
        dead: Vec::new(),
    };
    let path = &files.events;
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(io_err(path))?);
    let mut line = Vec::with_capacity(4096);
    let mut position = 0u64;
    let mut watermark = i64::MIN;
    let source = format!("replay:{}", path.display());
    let mut eof = false;
    if decoder.wants_header() {
        read_line(&mut reader, &mut line).map_err(io_err(path))?;
        decoder.set_header(trim_line(&line));
        position += 1;
    }
    // The events vector is reused from chunk to chunk: a fresh one of megabytes per
    // chunk is memory the allocator hands back and the kernel zeroes again each time.
    let mut spare_events = Vec::with_capacity(CHUNK);
    while !eof {
        let mut batch = Batch::new(source.clone(), files.format.clone());
        batch.events = std::mem::take(&mut spare_events);
        while batch.events.len() + batch.dead_letters.len() < CHUNK {
            line.clear();
            if read_line(&mut reader, &mut line).map_err(io_err(path))? == 0 {
                eof = true;
                break;
            }
            position += 1;
            let raw = trim_line(&line);
            if raw.is_empty() {
                continue;
            }
            add_record(
                &mut batch,
                &mut decoder,
                raw,
                position,
                || format!("line {position}"),
                i64::MAX / 4,
            );
        }
        let read = batch.events.len();
        batch.events.retain(|e| e.ts_ms >= counted.0);
        summary.skipped += (read - batch.events.len()) as u64;
        if let Some(max) = batch.events.iter().map(|e| e.ts_ms).max() {
            watermark = watermark.max(max);
        }
        if let Some(min) = batch.events.iter().map(|e| e.ts_ms).min() {
            let first = summary.span_ms.map_or(min, |s| s.0.min(min));
            summary.span_ms = Some((first, watermark));
        }
        let until = if eof { i64::MAX } else { watermark };
        while changes.last().is_some_and(|c| c.ts_ms <= until) {
            batch.changes.push(changes.pop().expect("peeked"));
        }
        evals
            .release(until, &mut batch)
            .map_err(|e| ReplayError::Io {
                path: files
                    .evals
                    .as_ref()
                    .map_or(String::new(), |p| p.display().to_string()),
                source: e,
            })?;
        let read = batch.evals.len();
        batch.evals.retain(|e| e.ts_ms > counted.1);
        summary.skipped += (read - batch.evals.len()) as u64;
        for (pos, reason, raw) in evals.dead.drain(..) {
            crate::ingest::add_dead_letter(&mut batch, format!("evals line {pos}"), reason, &raw);
        }
        let (report, fresh) = store.commit_fresh(&batch, crate::clock::now_ms())?;
        summary.events += report.events_inserted;
        summary.evals += report.evals_inserted;
        summary.changes += report.changes_inserted;
        summary.dead_letters += report.dead_letters;
        summary.duplicates += report.events_duplicate + report.evals_duplicate;
        analysis.feed(&batch, &fresh);
        let lines = match eof {
            false => analysis.advance(watermark, watermark)?,
            // The end of the data: judge every complete bucket, then close the budgets'
            // days and send what is still grouped.
            true => {
                let mut lines = analysis.end_of_data(watermark, watermark)?;
                lines.extend(analysis.finish(watermark)?);
                lines
            }
        };
        for a in lines {
            count(&mut summary, &a);
            emit(&a);
        }
        for s in analysis.take_sent() {
            *summary.notifications.entry(s.channel.clone()).or_default() += 1;
            summary.sent.push(s);
        }
        spare_events = std::mem::take(&mut batch.events);
        spare_events.clear();
    }
    // A kept store is left with the state the replay ended in, so `serve` on it goes
    // on from there instead of relearning.
    if files.keep_aggregates && watermark > i64::MIN {
        summary.snapshot = Some(analysis.store_snapshot(watermark)?);
    }
    let counters = analysis.counters();
    summary.late_events = counters.late_events;
    summary.unmatched_evals = counters.unmatched_evals;
    summary.late_evals = counters.late_evals;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.events_per_second = summary.events as f64 / summary.seconds.max(1e-9);
    Ok(summary)
}

fn count(summary: &mut ReplaySummary, a: &Alert) {
    match a.event {
        AlertEvent::Firing => summary.firing += 1,
        AlertEvent::Updated => summary.updated += 1,
        AlertEvent::Reopened => summary.reopened += 1,
        AlertEvent::Resolved => summary.resolved += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_line_matches_read_until_across_buffer_edges() {
        let text = b"first line\n\nthird, longer than the buffer\nlast without newline";
        for capacity in [1, 3, 7, 64] {
            let mut ours = BufReader::with_capacity(capacity, &text[..]);
            let mut std = BufReader::with_capacity(capacity, &text[..]);
            loop {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let n = read_line(&mut ours, &mut a).unwrap();
                assert_eq!(n, std.read_until(b'\n', &mut b).unwrap());
                assert_eq!(a, b, "capacity {capacity}");
                if n == 0 {
                    break;
                }
            }
        }
    }
}
