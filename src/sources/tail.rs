//! The tailer: follows one usage log file the way a sidecar must.
//!
//! - It resumes from its checkpoint, which is committed in the same transaction as
//!   the events it covers, so a crash at any moment neither loses nor repeats a line.
//! - Rotation by rename-and-create: the old file (still open) is read to its end,
//!   then the new file from its start.
//! - Truncation and copytruncate: same inode but shorter than our offset, or with
//!   different leading bytes: read again from the start.
//! - A partial last line waits for its newline; a line longer than the limit goes to
//!   dead letters and the tailer skips to the next newline.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::adapters::{Decoder, Format};
use crate::clock::now_ms;
use crate::domain::{Fingerprint, TailCheckpoint};
use crate::ingest::{add_dead_letter, add_record};
use crate::sources::SourceEnv;
use crate::store::writer::InFlight;
use crate::store::{Batch, StoreError, queries};
use crate::telemetry::PathLabels;

/// Where a file without a checkpoint is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Read the whole existing file (nothing already logged is missed).
    #[default]
    Beginning,
    /// Only lines written from now on.
    End,
}

/// What to tail and how.
#[derive(Debug, Clone)]
pub struct TailSpec {
    /// The file to follow, its directory made canonical; also its checkpoint key.
    pub path: PathBuf,
    /// The format's name as configured, for batches and metric labels.
    pub format_name: String,
    /// The format the lines are decoded with.
    pub format: Format,
    /// Where to begin when the file has no checkpoint.
    pub start: StartAt,
}

impl TailSpec {
    /// The source name its records, metrics and data clock are labelled with.
    pub fn source_name(&self) -> String {
        format!("tail:{}", self.path.display())
    }
}

/// Limits and pacing of a tailer.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Lines longer than this are dead-lettered and skipped.
    pub max_line_bytes: usize,
    /// Records per committed batch, at most.
    pub batch_records: usize,
    /// How often to look for new data, rotation or truncation when idle.
    pub poll: Duration,
    /// Stop at the end of the file instead of following it (`import`).
    pub stop_at_eof: bool,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            max_line_bytes: 1 << 20,
            batch_records: 8192,
            poll: Duration::from_millis(100),
            stop_at_eof: false,
        }
    }
}

/// Why following stopped.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// Opening or reading the file failed.
    #[error("reading the file: {0}")]
    Io(#[from] io::Error),
    /// Reading the checkpoint or committing a batch failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

const READ_CHUNK: usize = 1 << 20;
/// How long a renamed-away file is still read after its last write: a gateway keeps
/// writing to it until it reopens its log (logrotate's `create` without copytruncate).
const ROTATED_FILE_GRACE: Duration = Duration::from_secs(2);

/// Follows one file. Run it on its own thread with `run`.
pub struct Tailer {
    spec: TailSpec,
    opts: TailOptions,
    env: SourceEnv,
    source: String,
    path_key: String,
}

/// The file being read and how far.
struct Open {
    file: File,
    fingerprint: Fingerprint,
    /// Offset of the next byte to read.
    read_pos: u64,
    /// Bytes read but not yet consumed (an unfinished line), starting at `pending_start`.
    pending: Vec<u8>,
    pending_start: u64,
    /// An over-long line is being skipped up to its newline.
    discarding: bool,
}

impl Tailer {
    /// A tailer of `spec` that commits through `writer`; `db_path` holds its checkpoint.
    pub fn new(spec: TailSpec, opts: TailOptions, env: SourceEnv) -> Tailer {
        let path_key = spec.path.display().to_string();
        Tailer {
            source: spec.source_name(),
            path_key,
            spec,
            opts,
            env,
        }
    }

    /// Follow the file until `stop` is set (or its end, with `stop_at_eof`). Errors are
    /// logged and reading restarts from the last committed checkpoint, so nothing is
    /// lost or counted twice; with `stop_at_eof` the error is returned instead.
    pub fn run(mut self) -> Result<(), TailError> {
        loop {
            match self.follow() {
                Ok(()) => return Ok(()),
                Err(e) if self.opts.stop_at_eof => return Err(e),
                Err(e) => {
                    self.env
                        .clocks
                        .failing(&self.source, now_ms(), &e.to_string());
                    tracing::error!(path = %self.path_key, cause = %e, "tailer failed; resuming from the last checkpoint in 1s");
                    if self.env.stop.sleep(Duration::from_secs(1)) {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn follow(&mut self) -> Result<(), TailError> {
        let mut decoder = self.new_decoder();
        let mut in_flight = self.env.in_flight(&self.source);
        let Some(mut open) = self.open_at_checkpoint(&mut decoder, &mut in_flight)? else {
            return Ok(());
        };
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut batch = self.new_batch();
        loop {
            let n = open.file.read(&mut chunk)?;
            if n > 0 {
                self.consume(
                    &mut open,
                    &chunk[..n],
                    &mut decoder,
                    &mut batch,
                    &mut in_flight,
                )?;
                // Stop promptly even with a backlog: the checkpoint keeps our place.
                if !self.env.stop.is_set() {
                    continue;
                }
            }
            // At the end of what is written (or stopping): commit what we have, then look around.
            let at_end = now_ms();
            self.flush(
                &mut open,
                &mut decoder,
                &mut batch,
                &mut in_flight,
                Vec::new(),
            )?;
            self.env.clocks.caught_up(&self.source, at_end);
            self.update_behind(&open);
            if self.opts.stop_at_eof || self.env.stop.is_set() {
                return Ok(in_flight.wait()?);
            }
            if self.env.stop.sleep(self.opts.poll) {
                return Ok(in_flight.wait()?);
            }
            match self.check_rotation(&mut open)? {
                Rotation::None => {}
                Rotation::Truncated => {
                    self.count_rotation();
                    tracing::info!(path = %self.path_key, "file truncated; reading from the start");
                    // copytruncate: what we had not read yet is in the copy. Finish it there.
                    if let Some(copy) =
                        find_copy(&self.spec.path, &open.fingerprint, open.read_pos)?
                    {
                        let truncated = std::mem::replace(&mut open.file, copy);
                        open.file.seek(SeekFrom::Start(open.read_pos))?;
                        self.finish_old(
                            &mut open,
                            &mut chunk,
                            &mut decoder,
                            &mut batch,
                            &mut in_flight,
                            Duration::ZERO,
                        )?;
                        open.file = truncated;
                    }
                    open = self.reopen_fresh(open.file)?;
                    // A rewritten file starts over, CSV header included.
                    decoder = self.new_decoder();
                }
                Rotation::Renamed(new_file) => {
                    self.count_rotation();
                    tracing::info!(path = %self.path_key, "file rotated; finishing the old file, then reading the new one");
                    // The gateway may write to the old file until it reopens its log.
                    self.finish_old(
                        &mut open,
                        &mut chunk,
                        &mut decoder,
                        &mut batch,
                        &mut in_flight,
                        ROTATED_FILE_GRACE,
                    )?;
                    decoder = self.new_decoder();
                    open = self.reopen_fresh(new_file)?;
                }
            }
        }
    }

    /// Open the file and position it from the checkpoint (or the start policy).
    /// Returns `None` when asked to stop while waiting for the file to appear.
    fn open_at_checkpoint(
        &mut self,
        decoder: &mut Decoder,
        in_flight: &mut InFlight,
    ) -> Result<Option<Open>, TailError> {
        let checkpoint = queries::checkpoint(&self.env.db, &self.env.node, &self.path_key)?;
        let mut file = loop {
            match File::open(&self.spec.path) {
                Ok(f) => break f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if self.opts.stop_at_eof {
                        return Err(e.into());
                    }
                    // Nothing to read is silence, judged as such.
                    self.env.clocks.caught_up(&self.source, now_ms());
                    tracing::warn!(path = %self.path_key, "file does not exist yet; waiting for it");
                    if self.env.stop.sleep(Duration::from_secs(1)) {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        };
        let offset = match &checkpoint {
            Some(cp)
                if cp.fingerprint.matches(&mut file)? && file.metadata()?.len() >= cp.offset =>
            {
                cp.offset
            }
            Some(cp) => {
                // Rotated while we were down: finish the old file if it is still in the
                // directory under another name, then take the new one from its start.
                if let Some(mut old) = find_rotated(&self.spec.path, &cp.fingerprint)? {
                    if decoder.wants_header() {
                        decoder.set_header(&first_line(&mut old)?);
                    }
                    old.seek(SeekFrom::Start(cp.offset))?;
                    let mut o = Open::new(old, cp.fingerprint, cp.offset);
                    let mut chunk = vec![0u8; READ_CHUNK];
                    let mut batch = self.new_batch();
                    // Rotated while we were down: the gateway has long since reopened.
                    self.finish_old(
                        &mut o,
                        &mut chunk,
                        decoder,
                        &mut batch,
                        in_flight,
                        Duration::ZERO,
                    )?;
                    *decoder = self.new_decoder();
                }
                0
            }
            None => match self.spec.start {
                StartAt::Beginning => 0,
                StartAt::End => file.metadata()?.len(),
            },
        };
        let fingerprint = Fingerprint::of(&mut file)?;
        if offset > 0 && decoder.wants_header() {
            decoder.set_header(&first_line(&mut file)?);
        }
        file.seek(SeekFrom::Start(offset))?;
        let mut open = Open::new(file, fingerprint, offset);
        if offset > 0 {
            // Started at the end of a file whose last line may be unfinished: skip to
            // the next newline rather than read half a line.
            open.discarding = !ends_with_newline(&mut open.file, offset)?;
        }
        if checkpoint.is_none() && offset > 0 {
            let batch = Batch::new(&self.source, &self.spec.format_name);
            self.submit(&mut open, batch, in_flight)?;
        }
        tracing::info!(path = %self.path_key, offset, "tailing");
        Ok(Some(open))
    }

    /// Split `data` into lines and decode the complete ones into `batch`, committing
    /// it whenever it is full. The rest waits for `flush` at the end of the file, so
    /// an import commits full batches rather than one per read.
    fn consume(
        &self,
        open: &mut Open,
        data: &[u8],
        decoder: &mut Decoder,
        batch: &mut Batch,
        in_flight: &mut InFlight,
    ) -> Result<(), TailError> {
        let base = open.read_pos;
        open.read_pos += data.len() as u64;
        let mut idx = 0;
        let now = now_ms();
        while let Some(nl) = memchr::memchr(b'\n', &data[idx..]) {
            let piece = &data[idx..idx + nl];
            let line_start = open.pending_start;
            if open.discarding {
                open.discarding = false;
            } else if open.pending.len() + piece.len() > self.opts.max_line_bytes {
                self.over_long(batch, open, piece);
            } else {
                let line: &[u8] = if open.pending.is_empty() {
                    piece
                } else {
                    open.pending.extend_from_slice(piece);
                    &open.pending
                };
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.trim_ascii().is_empty() {
                    let path = &self.path_key;
                    add_record(
                        batch,
                        decoder,
                        line,
                        line_start,
                        || format!("{path}@{line_start}"),
                        now,
                    );
                }
            }
            open.pending.clear();
            idx += nl + 1;
            open.pending_start = base + idx as u64;
            if batch.len() >= self.opts.batch_records {
                let full = std::mem::replace(batch, self.new_batch());
                self.submit(open, full, in_flight)?;
            }
        }
        let rest = &data[idx..];
        // Keep the unfinished line; past the limit, keep only enough to report it.
        if !open.discarding {
            if open.pending.len() + rest.len() > self.opts.max_line_bytes {
                self.over_long(batch, open, rest);
                open.discarding = true;
                open.pending.clear();
                open.pending_start = open.read_pos;
            } else {
                open.pending.extend_from_slice(rest);
            }
        }
        Ok(())
    }

    /// A decoder in a fresh state: a new file has its own CSV header.
    fn new_decoder(&self) -> Decoder {
        Decoder::new(self.spec.format.clone(), self.env.ctx.clone())
    }

    fn count_rotation(&self) {
        self.env
            .metrics
            .tail_rotations
            .get_or_create(&self.labels())
            .inc();
    }

    fn new_batch(&self) -> Batch {
        Batch::with_capacity(
            &self.source,
            &self.spec.format_name,
            self.opts.batch_records,
        )
    }

    fn over_long(&self, batch: &mut Batch, open: &Open, piece: &[u8]) {
        let mut head = open.pending.clone();
        head.extend_from_slice(&piece[..piece.len().min(crate::redact::MAX_RAW_BYTES)]);
        add_dead_letter(
            batch,
            format!("{}@{}", self.path_key, open.pending_start),
            format!(
                "line longer than {} bytes (max_line_bytes); skipped to the next newline",
                self.opts.max_line_bytes
            ),
            &head,
        );
    }

    /// Queue a batch with the checkpoint just past its last complete line.
    fn submit(
        &self,
        open: &mut Open,
        mut batch: Batch,
        in_flight: &mut InFlight,
    ) -> Result<(), TailError> {
        if open.fingerprint.is_partial() {
            open.fingerprint = Fingerprint::of(&mut open.file)?;
        }
        batch.checkpoint = Some(TailCheckpoint {
            path: self.path_key.clone(),
            fingerprint: open.fingerprint,
            offset: open.pending_start,
        });
        in_flight.submit(&self.env.writer, batch)?;
        Ok(())
    }

    /// Commit the checkpoint (and `extra` lines) even if no record is pending, and
    /// wait for everything in flight.
    fn flush(
        &self,
        open: &mut Open,
        decoder: &mut Decoder,
        batch: &mut Batch,
        in_flight: &mut InFlight,
        final_line: Vec<u8>,
    ) -> Result<(), TailError> {
        if !final_line.is_empty() {
            let start = open.pending_start;
            let path = &self.path_key;
            add_record(
                batch,
                decoder,
                &final_line,
                start,
                || format!("{path}@{start}"),
                now_ms(),
            );
            open.pending_start += final_line.len() as u64;
        }
        if !batch.is_empty() {
            let done = std::mem::replace(batch, self.new_batch());
            self.submit(open, done, in_flight)?;
        }
        Ok(in_flight.wait()?)
    }

    /// Read a rotated-away file to its end, and keep reading it until it has been
    /// quiet for `grace`. Its unfinished last line will never be finished then, so it
    /// counts as a line.
    #[allow(clippy::too_many_arguments)]
    fn finish_old(
        &self,
        open: &mut Open,
        chunk: &mut [u8],
        decoder: &mut Decoder,
        batch: &mut Batch,
        in_flight: &mut InFlight,
        grace: Duration,
    ) -> Result<(), TailError> {
        let mut quiet = Duration::ZERO;
        loop {
            let n = open.file.read(chunk)?;
            if n > 0 {
                self.consume(open, &chunk[..n], decoder, batch, in_flight)?;
                quiet = Duration::ZERO;
                continue;
            }
            if quiet >= grace || self.env.stop.is_set() {
                break;
            }
            self.flush(open, decoder, batch, in_flight, Vec::new())?;
            self.env.stop.sleep(self.opts.poll);
            quiet += self.opts.poll;
        }
        // Stopping: the writer may still finish that line; the checkpoint stays before it.
        let last =
            if open.discarding || self.env.stop.is_set() || open.pending.trim_ascii().is_empty() {
                Vec::new()
            } else {
                std::mem::take(&mut open.pending)
            };
        self.flush(open, decoder, batch, in_flight, last)
    }

    fn reopen_fresh(&self, mut file: File) -> Result<Open, TailError> {
        file.seek(SeekFrom::Start(0))?;
        let fingerprint = Fingerprint::of(&mut file)?;
        Ok(Open::new(file, fingerprint, 0))
    }

    fn check_rotation(&self, open: &mut Open) -> Result<Rotation, TailError> {
        let current = match std::fs::metadata(&self.spec.path) {
            Ok(m) => m,
            // Renamed away and not recreated yet: keep reading the old one.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Rotation::None),
            Err(e) => return Err(e.into()),
        };
        if current.dev() != open.fingerprint.dev || current.ino() != open.fingerprint.inode {
            return Ok(match File::open(&self.spec.path) {
                Ok(f) => Rotation::Renamed(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Rotation::None,
                Err(e) => return Err(e.into()),
            });
        }
        if current.len() < open.read_pos || !open.fingerprint.matches(&mut open.file)? {
            return Ok(Rotation::Truncated);
        }
        Ok(Rotation::None)
    }

    fn update_behind(&self, open: &Open) {
        if let Ok(m) = std::fs::metadata(&self.spec.path) {
            let behind = m.len().saturating_sub(open.pending_start);
            self.env
                .metrics
                .tail_bytes_behind
                .get_or_create(&self.labels())
                .set(behind as i64);
        }
    }

    fn labels(&self) -> PathLabels {
        PathLabels {
            path: self.path_key.clone(),
        }
    }
}

enum Rotation {
    None,
    Truncated,
    Renamed(File),
}

impl Open {
    fn new(file: File, fingerprint: Fingerprint, offset: u64) -> Open {
        Open {
            file,
            fingerprint,
            read_pos: offset,
            pending: Vec::new(),
            pending_start: offset,
            discarding: false,
        }
    }
}

/// Find the file a checkpoint was taken of among the siblings of `path` (where a
/// rotator renames it: `usage.log.1`, `usage.log-20260601`, ...).
fn find_rotated(path: &Path, fp: &Fingerprint) -> io::Result<Option<File>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() && meta.dev() == fp.dev && meta.ino() == fp.inode {
            let mut f = File::open(entry.path())?;
            if fp.matches(&mut f)? {
                return Ok(Some(f));
            }
        }
    }
    Ok(None)
}

/// Find the copy copytruncate made of the file we were reading: a sibling with another
/// inode, the same leading bytes, and at least `read` bytes. The newest such file wins.
fn find_copy(path: &Path, fp: &Fingerprint, read: u64) -> io::Result<Option<File>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut best: Option<(std::time::SystemTime, File)> = None;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || meta.ino() == fp.inode || meta.len() < read {
            continue;
        }
        let mut f = File::open(entry.path())?;
        if fp.same_head(&mut f)? {
            let modified = meta.modified()?;
            if best.as_ref().is_none_or(|(m, _)| modified > *m) {
                best = Some((modified, f));
            }
        }
    }
    Ok(best.map(|(_, f)| f))
}

fn first_line(file: &mut File) -> io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = Vec::new();
    file.by_ref().take(64 * 1024).read_to_end(&mut buf)?;
    let end = memchr::memchr(b'\n', &buf).unwrap_or(buf.len());
    buf.truncate(end);
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(buf)
}

fn ends_with_newline(file: &mut File, offset: u64) -> io::Result<bool> {
    if offset == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::Start(offset - 1))?;
    let mut b = [0u8; 1];
    file.read_exact(&mut b)?;
    Ok(b[0] == b'\n')
}
