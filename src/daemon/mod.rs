//! Assembly: opens the store, starts the writer, the tailers and the HTTP server,
//! and stops them all on one shutdown signal. `import` runs the same pipeline on one
//! file once.

mod duties;
mod following;
mod tenure;

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::adapters::Context;
use crate::api::{AppState, router};
use crate::config::Config;
use crate::domain::ExposeSecret;
use crate::identity::Identity;
use crate::pricing::{PriceTable, PricingError};
use crate::sources::SourceEnv;
use crate::sources::clocks::SourceClocks;
use crate::sources::gateway_db::HealthBoard;
use crate::sources::tail::{TailOptions, TailSpec, Tailer};
use crate::stop::Stop;
use crate::store::pg::ingest::PgWriter;
use crate::store::writer::Writer;
use crate::store::{Location, Store, StoreError, queries};
use crate::telemetry::Metrics;

/// Why the daemon could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The store could not be opened or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The price table could not be loaded.
    #[error(transparent)]
    Pricing(#[from] PricingError),
    /// The HTTP address could not be bound.
    #[error(
        "cannot listen on {addr}: {source} (is another process using it? pick one with --listen)"
    )]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The OTLP/gRPC address could not be bound.
    #[error(
        "cannot listen for OTLP/gRPC on {addr}: {source} (is another collector using it? change otlp_grpc_listen)"
    )]
    BindGrpc {
        /// The address asked for.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Replicas on PostgreSQL were started without a shared API token.
    #[error(
        "with --db on PostgreSQL every replica needs the same API token: set DRIFTWARDEN_TOKEN (or --token); generate one with `openssl rand -hex 24`"
    )]
    SharedToken,
    /// The generated API token could not be read from or written to its file.
    #[error("token file {path}: {source}")]
    TokenFile {
        /// Path of the token file.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// An import stopped before the end of its file.
    #[error("reading {path}: {source}")]
    Import {
        /// Path of the imported file.
        path: String,
        /// What stopped the tailer.
        source: crate::sources::tail::TailError,
    },
    /// The notification worker could not start.
    #[error(transparent)]
    Notify(#[from] crate::notify::NotifyError),
    /// Rules, tiers or analysis settings are invalid.
    #[error(transparent)]
    Analysis(#[from] crate::analysis::AnalysisError),
    /// The schedules could not start.
    #[error(transparent)]
    Schedule(#[from] crate::schedule::ScheduleError),
    /// The HTTP server failed while serving.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Committed batches that may wait for the analysis before the writer blocks. Each
/// holds up to `batch_records` events in memory; a backfill runs ahead of the analysis,
/// so this bounds its peak (64 batches held about 100 MiB more at the same speed).
const ANALYSIS_QUEUE: usize = 8;

/// Who runs the leader's duties in this process.
enum Leadership {
    /// A single daemon on SQLite: always.
    Single(duties::Duties),
    /// A replica on PostgreSQL: while the lease thread holds the leader lease.
    Replica(Stop, JoinHandle<()>),
}

/// The parts every run mode shares.
struct Pipeline {
    writer: Writer,
    writer_thread: JoinHandle<()>,
    ctx: Arc<Context>,
    metrics: Arc<Metrics>,
    clocks: SourceClocks,
}

impl Pipeline {
    fn open(
        config: &Config,
        analysis: Option<std::sync::mpsc::SyncSender<crate::store::writer::Committed>>,
    ) -> Result<Pipeline, DaemonError> {
        let pricing = PriceTable::load_dir(&config.rules)?;
        let metrics = Arc::new(Metrics::default());
        let cap = config.engine.analysis.cardinality_cap;
        // Each backend's tuned writer; both store the same rows (`store::writer::Ingest`).
        let (salt, (writer, writer_thread)) = match &config.db {
            Location::Sqlite(path) => {
                let store = Store::open(path)?.with_cardinality_cap(cap);
                let salt = store.identity_salt()?;
                (salt, Writer::spawn(store, metrics.clone(), analysis))
            }
            Location::Postgres(url) => {
                let mut store =
                    PgWriter::open(url.expose(), &config.node)?.with_cardinality_cap(cap);
                let salt = store.identity_salt()?;
                (salt, Writer::spawn(store, metrics.clone(), analysis))
            }
        };
        tracing::info!(db = %config.db, node = %config.node, models_priced = pricing.len(), "store open");
        let ctx = Arc::new(Context {
            pricing: Arc::new(pricing),
            identity: Arc::new(Identity::new(salt, config.aliases.clone())),
            quota_per_unit: config.quota_per_unit,
            max_future_ms: config.max_future_skew_secs as i64 * 1000,
        });
        Ok(Pipeline {
            writer,
            writer_thread,
            ctx,
            metrics,
            clocks: SourceClocks::default(),
        })
    }

    fn tailer(&self, config: &Config, spec: TailSpec, opts: TailOptions, stop: Stop) -> Tailer {
        Tailer::new(spec, opts, self.env(config, stop))
    }

    /// What a source thread needs, sharing this pipeline's writer and metrics.
    fn env(&self, config: &Config, stop: Stop) -> SourceEnv {
        SourceEnv {
            ctx: self.ctx.clone(),
            writer: self.writer.clone(),
            db: config.db.clone(),
            node: config.node.clone(),
            fence: None,
            metrics: self.metrics.clone(),
            stop,
            clocks: self.clocks.clone(),
        }
    }

    /// Stop the writer after it has committed everything queued.
    fn close(self) {
        drop(self.writer);
        if self.writer_thread.join().is_err() {
            tracing::error!("store writer panicked");
        }
    }
}

/// Run the daemon until `shutdown` resolves. Prints `driftwarden listening on URL`
/// to stdout once the server accepts connections.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    // Before anything starts: a generated token lives in a file beside a SQLite
    // store; replicas on PostgreSQL share no directory, and a client must be able to
    // write to whichever replica answers.
    if config.token.is_none() && config.db.sqlite_path().is_none() {
        return Err(DaemonError::SharedToken);
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: config.listen.to_string(),
            source,
        })?;
    serve_on(config, listener, shutdown).await
}

/// `serve` on a listener the caller bound, so it knows the address (port 0) before
/// the daemon starts; `config.listen` is not used.
pub async fn serve_on(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    // On SQLite the writer hands its commits to the analysis; on PostgreSQL every
    // replica commits and the leader reads them back (`duties`).
    let replicated = matches!(config.db, Location::Postgres(_));
    let (to_analysis, batches) = match replicated {
        false => {
            let (tx, rx) = std::sync::mpsc::sync_channel(ANALYSIS_QUEUE);
            (Some(tx), Some(rx))
        }
        true => (None, None),
    };
    // Off the async threads: PostgreSQL's blocking client runs a runtime of its own.
    let opening = config.clone();
    let pipeline = tokio::task::spawn_blocking(move || Pipeline::open(&opening, to_analysis))
        .await
        .map_err(|e| DaemonError::Serve(std::io::Error::other(e)))??;
    // Every pulling source holds the analysis until it has told how far it got, so
    // a backlog read at start is judged along its own data clock.
    let started = crate::clock::now_ms();
    let names = config.tails.iter().map(|t| t.source_name());
    for name in names.chain(config.gateway_dbs.iter().map(|d| d.name())) {
        pipeline.clocks.register(&name, started);
    }
    // This process's name in the leases it holds (and in the outbox claims).
    let holder = crate::store::pg::lease::replica_id();
    let progress = crate::analysis::Progress::default();
    let shared = duties::Shared {
        config: config.clone(),
        writer: pipeline.writer.clone(),
        metrics: pipeline.metrics.clone(),
        progress: progress.clone(),
        runtime: tokio::runtime::Handle::current(),
        holder: holder.clone(),
    };
    let token = match &config.token {
        Some(t) => t.expose_secret().to_string(),
        None => match config.db.sqlite_path() {
            Some(db) => token_from_file(db)?,
            None => return Err(DaemonError::SharedToken),
        },
    };
    let addr = listener.local_addr().map_err(DaemonError::Serve)?;
    // A single daemon leads from the start; replicas contend for the leader lease.
    let leadership = match &config.db {
        Location::Sqlite(_) => Leadership::Single(duties::Duties::start(
            &shared,
            batches,
            pipeline.clocks.clone(),
            None,
        )?),
        Location::Postgres(url) => {
            let (url, stop, work) = (
                url.clone(),
                Stop::default(),
                duties::Leading(shared.clone()),
            );
            let (stopped, holder, ttl_ms) = (stop.clone(), holder.clone(), config.lease_ttl_ms);
            tracing::info!(%holder, "contending for the leader lease");
            let thread = std::thread::Builder::new()
                .name("leader-lease".into())
                .spawn(move || tenure::hold(&url, ("leader", ttl_ms), &holder, &stopped, work))
                .expect("spawning the leader lease thread");
            Leadership::Replica(stop, thread)
        }
    };

    let stop = Stop::default();
    let opts = TailOptions {
        max_line_bytes: config.max_line_bytes,
        ..TailOptions::default()
    };
    let tailers: Vec<JoinHandle<()>> = config
        .tails
        .iter()
        .map(|spec| {
            let t = pipeline.tailer(&config, spec.clone(), opts.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("tail:{}", spec.path.display()))
                // Following retries on its own and returns only when stopped.
                .spawn(move || drop(t.run()))
                .expect("spawning a tailer thread")
        })
        .collect();

    let health: HealthBoard = Default::default();
    let followers: Vec<JoinHandle<()>> = config
        .gateway_dbs
        .iter()
        .map(|spec| {
            let env = pipeline.env(&config, stop.clone());
            match &config.db {
                Location::Sqlite(_) => following::spawn(spec, env, health.clone()),
                // One replica at a time follows each gateway database.
                Location::Postgres(url) => {
                    let (url, stop, ttl_ms) = (url.clone(), stop.clone(), config.lease_ttl_ms);
                    let lease = format!("source:{}", spec.name());
                    let holder = holder.clone();
                    let work = following::Following {
                        spec: spec.clone(),
                        env,
                        health: health.clone(),
                    };
                    std::thread::Builder::new()
                        .name(format!("lease:{}", spec.table))
                        .spawn(move || tenure::hold(&url, (&lease, ttl_ms), &holder, &stop, work))
                        .expect("spawning a source lease thread")
                }
            }
        })
        .collect();

    let state = AppState {
        writer: pipeline.writer.clone(),
        ctx: pipeline.ctx.clone(),
        formats: Arc::new(config.formats.clone()),
        db: config.db.clone(),
        metrics: pipeline.metrics.clone(),
        token: token.into(),
        max_body_bytes: config.max_body_bytes,
        db_health: health,
        source_clocks: pipeline.clocks.clone(),
        analysis: progress,
        exceptions: crate::exceptions::Registry::new(config.exceptions),
        otlp: Arc::new(crate::api::OtlpState::new(crate::clock::now_ms())),
    };
    let grpc = match config.otlp_grpc_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::BindGrpc {
                    addr: addr.to_string(),
                    source,
                })?;
            let grpc_stop = Stop::default();
            let stopped = grpc_stop.clone();
            let shutdown = async move { stopped.stopped().await };
            let task = tokio::spawn(crate::api::serve_otlp_grpc(
                listener,
                state.clone(),
                shutdown,
            ));
            Some((grpc_stop, task))
        }
        None => None,
    };
    let app = router(state);
    tracing::info!(%addr, tails = config.tails.len(), gateway_dbs = config.gateway_dbs.len(), "serving");
    {
        let mut out = std::io::stdout().lock();
        // The ready line scripts and tests wait for; a closed stdout must not stop us.
        let _ = writeln!(out, "driftwarden listening on http://{addr}");
        let _ = out.flush();
    }
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;

    tracing::info!("shutting down: finishing tailers and pending commits");
    if let Some((grpc_stop, task)) = grpc {
        grpc_stop.set();
        match task.await {
            Ok(Err(e)) => tracing::error!(cause = %e, "OTLP/gRPC server failed"),
            Err(e) => tracing::error!(cause = %e, "OTLP/gRPC server panicked"),
            Ok(Ok(())) => {}
        }
    }
    stop.set();
    for t in tailers.into_iter().chain(followers) {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    tokio::task::spawn_blocking(move || {
        let analysis = match leadership {
            Leadership::Single(duties) => Some(duties.stop(&shared)),
            // The lease thread ends the duties (joining the analysis) and releases
            // the lease, so another replica takes over at once.
            Leadership::Replica(stop, thread) => {
                stop.set();
                if thread.join().is_err() {
                    tracing::error!("leader lease thread panicked");
                }
                None
            }
        };
        // The duties' writer handle too: the writer stops once every handle is gone.
        drop(shared);
        pipeline.close();
        // The writer's end of the analysis queue is gone: the analysis drains and stops.
        if analysis.is_some_and(|a| a.join().is_err()) {
            tracing::error!("analysis thread panicked");
        }
    })
    .await
    .ok();
    served.map_err(DaemonError::Serve)
}

/// The generated API token lives beside the database, readable by its owner only.
pub fn token_path(db: &Path) -> PathBuf {
    db.with_file_name("driftwarden.token")
}

fn token_from_file(db: &Path) -> Result<String, DaemonError> {
    let path = token_path(db);
    let err = |source| DaemonError::TokenFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 16 => {
            tracing::info!(token_file = %path.display(), "API token read from token file");
            return Ok(t.trim().to_string());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(err)?;
    // `mode` applies only to a new file: tighten one that already existed too.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    f.write_all(token.as_bytes()).map_err(err)?;
    tracing::warn!(token_file = %path.display(), "no API token configured: generated one; set DRIFTWARDEN_TOKEN to choose your own");
    Ok(token)
}

/// What an import stored.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// Record counts in the store after the import.
    pub stats: queries::Stats,
    /// Wall-clock duration of the import, in seconds.
    pub seconds: f64,
}

/// Read one file to its end through the tailer (so a re-run resumes from the
/// checkpoint), commit everything and return what is stored.
pub fn import(config: &Config, spec: TailSpec) -> Result<ImportReport, DaemonError> {
    let started = Instant::now();
    let path = spec.path.display().to_string();
    let pipeline = Pipeline::open(config, None)?;
    let opts = TailOptions {
        max_line_bytes: config.max_line_bytes,
        stop_at_eof: true,
        ..TailOptions::default()
    };
    let result = pipeline.tailer(config, spec, opts, Stop::default()).run();
    pipeline.close();
    result.map_err(|source| DaemonError::Import { path, source })?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(ImportReport {
        stats: queries::stats(&config.db)?,
        seconds,
    })
}
