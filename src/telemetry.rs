//! driftwarden's own health: Prometheus metrics and the tracing subscriber.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels for per-source counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `tail:/path`, `http:events`, `http:evals`.
    pub source: String,
    /// The format name the records were read as.
    pub format: String,
}

/// Labels for per-source gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceOnly {
    /// The gateway database source's name, credentials removed.
    pub source: String,
}

/// Labels for per-file gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    /// The tailed file's configured path.
    pub path: String,
}

/// Labels for per-channel notification metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    /// The notification channel's name in the config.
    pub channel: String,
}

/// Every metric the daemon exports. Counted only after the store has committed.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Usage events stored, by source and format.
    pub events_ingested: Family<SourceLabels, Counter>,
    /// Usage events received again and not stored twice.
    pub events_duplicate: Family<SourceLabels, Counter>,
    /// Eval scores stored.
    pub evals_ingested: Family<SourceLabels, Counter>,
    /// Records that went to dead letters.
    pub records_rejected: Family<SourceLabels, Counter>,
    /// Records that are not usage records (top-ups, headers).
    pub records_skipped: Family<SourceLabels, Counter>,
    /// Bytes written to a tailed file and not yet read.
    pub tail_bytes_behind: Family<PathLabels, Gauge>,
    /// Rotations and truncations seen per tailed file.
    pub tail_rotations: Family<PathLabels, Counter>,
    /// Size in bytes of the database and its write-ahead log.
    pub db_bytes: Gauge,
    /// Store transactions that failed.
    pub commit_errors: Counter,
    /// Highest gateway logs-table id read, per database source.
    pub db_last_id: Family<SourceOnly, Gauge>,
    /// Rows in the gateway logs table above the cursor.
    pub db_rows_behind: Family<SourceOnly, Gauge>,
    /// Failed polls of a gateway database.
    pub db_poll_errors: Family<SourceOnly, Counter>,
    /// Unix time in seconds of the last successful poll of a gateway database.
    pub db_last_success: Family<SourceOnly, Gauge>,
    /// Notifications a channel accepted.
    pub notifications_sent: Family<ChannelLabels, Counter>,
    /// Failed delivery attempts (each retry counts).
    pub notification_failures: Family<ChannelLabels, Counter>,
    /// Notifications given up since start.
    pub notifications_dead: Family<ChannelLabels, Counter>,
    /// Outbox rows waiting for delivery.
    pub outbox_pending: Family<ChannelLabels, Gauge>,
    /// Outbox rows given up, as stored (survives restarts).
    pub outbox_dead: Family<ChannelLabels, Gauge>,
    /// Outbox reads and writes of a notification worker that failed; it retries.
    pub outbox_query_errors: Family<ChannelLabels, Counter>,
    /// Times a channel's worker looked for due notifications.
    pub outbox_polls: Family<ChannelLabels, Counter>,
    /// Data time the last analysis snapshot covers, ms since the Unix epoch.
    pub snapshot_watermark_ms: Gauge,
    /// Size of the last analysis snapshot, bytes.
    pub snapshot_bytes: Gauge,
    /// Seconds since the last analysis snapshot was stored.
    pub snapshot_age_seconds: Gauge,
    /// Seconds the last analysis snapshot took to encode and store.
    pub snapshot_write_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// 1 while this replica holds the leader lease (and on a single SQLite daemon).
    pub leader: Gauge,
    /// The fencing token of the leader lease this replica holds; 0 when it holds none.
    pub leader_token: Gauge,
    /// Seconds between the wall clock and the data time the analysis has judged up
    /// to, on the replica that runs it.
    pub analysis_lag_seconds: Gauge,
}

impl Metrics {
    /// Render all metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut registry = Registry::with_prefix("driftwarden");
        registry.register(
            "events_ingested",
            "Usage events stored, by source and format",
            self.events_ingested.clone(),
        );
        registry.register(
            "events_duplicate",
            "Usage events received again and not stored twice",
            self.events_duplicate.clone(),
        );
        registry.register(
            "evals_ingested",
            "Eval scores stored",
            self.evals_ingested.clone(),
        );
        registry.register(
            "records_rejected",
            "Records that went to dead letters",
            self.records_rejected.clone(),
        );
        registry.register(
            "records_skipped",
            "Records that are not usage records (top-ups, headers)",
            self.records_skipped.clone(),
        );
        registry.register(
            "tail_bytes_behind",
            "Bytes written to a tailed file and not yet read",
            self.tail_bytes_behind.clone(),
        );
        registry.register(
            "tail_rotations",
            "Rotations and truncations seen per tailed file",
            self.tail_rotations.clone(),
        );
        registry.register(
            "snapshot_watermark_ms",
            "Data time the last analysis snapshot covers, ms since the Unix epoch",
            self.snapshot_watermark_ms.clone(),
        );
        registry.register(
            "snapshot_bytes",
            "Size of the last analysis snapshot",
            self.snapshot_bytes.clone(),
        );
        registry.register(
            "snapshot_age_seconds",
            "Seconds since the last analysis snapshot was stored",
            self.snapshot_age_seconds.clone(),
        );
        registry.register(
            "snapshot_write_seconds",
            "Seconds the last analysis snapshot took to encode and store",
            self.snapshot_write_seconds.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads (runs the analysis, alerts and delivery)",
            self.leader.clone(),
        );
        registry.register(
            "leader_token",
            "Fencing token of the leader lease this replica holds, 0 when none",
            self.leader_token.clone(),
        );
        registry.register(
            "analysis_lag_seconds",
            "Wall clock minus the data time the analysis has judged up to",
            self.analysis_lag_seconds.clone(),
        );
        registry.register(
            "db_bytes",
            "Size of the database and its write-ahead log",
            self.db_bytes.clone(),
        );
        registry.register(
            "commit_errors",
            "Store transactions that failed",
            self.commit_errors.clone(),
        );
        registry.register(
            "gateway_db_last_id",
            "Highest gateway logs-table id read, per database source",
            self.db_last_id.clone(),
        );
        registry.register(
            "gateway_db_rows_behind",
            "Rows in the gateway logs table above the cursor",
            self.db_rows_behind.clone(),
        );
        registry.register(
            "gateway_db_poll_errors",
            "Failed polls of a gateway database (connection, permission, timeout)",
            self.db_poll_errors.clone(),
        );
        registry.register(
            "gateway_db_last_success_seconds",
            "Unix time of the last successful poll of a gateway database",
            self.db_last_success.clone(),
        );
        registry.register(
            "notifications_sent",
            "Notifications a channel accepted",
            self.notifications_sent.clone(),
        );
        registry.register(
            "notification_failures",
            "Failed notification delivery attempts, retries included",
            self.notification_failures.clone(),
        );
        registry.register(
            "notifications_dead",
            "Notifications given up after too many failures or a permanent one",
            self.notifications_dead.clone(),
        );
        registry.register(
            "outbox_query_errors",
            "Outbox reads and writes of a notification worker that failed (the worker logs each and retries)",
            self.outbox_query_errors.clone(),
        );
        registry.register(
            "outbox_polls",
            "Times a channel's worker looked for due notifications (about once a second while idle; a rate of zero means delivery for the channel has stopped)",
            self.outbox_polls.clone(),
        );
        registry.register(
            "outbox_pending",
            "Notifications waiting in the outbox",
            self.outbox_pending.clone(),
        );
        registry.register(
            "outbox_dead",
            "Dead notifications kept in the outbox",
            self.outbox_dead.clone(),
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Install the global tracing subscriber: human-readable by default, JSON with
/// `DRIFTWARDEN_LOG_FORMAT=json`; level from `RUST_LOG` (default `info`). Logs go to stderr.
pub fn init_tracing() {
    init_tracing_with("info");
}

/// `init_tracing` with `default` as the filter when `RUST_LOG` is not set.
pub fn init_tracing_with(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if std::env::var("DRIFTWARDEN_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests, embedding) keeps the first subscriber.
    drop(result);
}
