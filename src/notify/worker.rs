//! The delivery worker: one task per channel takes due rows from the outbox, sends
//! them, and records the outcome before it takes the next.
//!
//! Each channel delivers its rows in the order they were queued: a row being retried
//! holds back the rows after it (until it is sent or dead), so a resolve never
//! arrives before the opening it closes.
//!
//! A task claims a batch of its channel's due rows before it sends them, and marks
//! each with its claimer name right after the channel answered (`store::outbox`: on
//! PostgreSQL the claims keep replicas from sending a row twice; a crash between the
//! 2xx and the mark is the one window in which a message can be sent twice, and a
//! generic webhook gets an `Idempotency-Key` to fold that resend). A worker fenced by
//! a lease (`WorkerOptions::fence`) stops delivering at the first write the lease
//! refuses: another replica leads now. Failures are retried with exponential backoff
//! and jitter, or after `Retry-After` on a 429, which also pauses the whole channel.
//! Chat webhooks are paced to their service's documented limit (`Target::pace`: one a
//! second for Slack, Discord, Teams and Feishu; one every 3 s for DingTalk, WeCom and
//! a Telegram chat), across channels that share a URL.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use lettre::{AsyncSmtpTransport, Tokio1Executor};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::{Channel, Target};
use super::{
    NotifyError, SendError, chain, console, dingtalk, discord, email, feishu, pagerduty, scrub,
    secret_parts, slack, teams, telegram, webhook, wecom,
};
use crate::clock::now_ms;
use crate::domain::ExposeSecret;
use crate::stop::Stop;
use crate::store::outbox::{self, OutboxRow};
use crate::store::pg::lease::{self, Lease};
use crate::store::sql::{Db, Dialect, Sql};
use crate::store::{Location, StoreError};
use crate::telemetry::{ChannelLabels, Metrics};

/// Rows taken from the outbox per query.
const BATCH: u32 = 32;

/// How the worker retries and paces.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Wait after the first failure; doubles with each further one (default 1 s).
    pub backoff_base: Duration,
    /// Longest wait between attempts (default 10 min).
    pub backoff_cap: Duration,
    /// Failed attempts after which a row is dead (default 8).
    pub max_attempts: u32,
    /// How often an idle channel looks for newly enqueued rows (default 1 s).
    pub poll: Duration,
    /// Longest one HTTP request or SMTP session may take (default 10 s).
    pub send_timeout: Duration,
    /// The dashboard's public URL, linked from messages that had to be cut.
    pub dashboard_url: Option<String>,
    /// The name this worker claims outbox rows under (default
    /// `store::pg::lease::replica_id()`): unique per process, so replicas tell their
    /// claims apart.
    pub claimer: String,
    /// How long a claim keeps other claimers off a row (default 60 s); must exceed
    /// `send_timeout`. On PostgreSQL no send starts later than `send_timeout` before
    /// its claim lapses (a paced channel's long batch is claimed anew in parts), so
    /// another replica never takes a row still in flight; a crashed replica's rows
    /// wait this long before another delivers them. A SQLite store has one delivering
    /// process, so there a claim holds nothing past its batch: rows a crashed run had
    /// claimed are taken again at once.
    pub claim_ttl: Duration,
    /// The lease every write is fenced with (`Db::fenced`), PostgreSQL only: the
    /// leader's, so a replica that lost leadership marks nothing and stops delivering.
    /// `None`: unfenced (SQLite, or a single replica).
    pub fence: Option<Lease>,
}

impl Default for WorkerOptions {
    fn default() -> WorkerOptions {
        WorkerOptions {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(600),
            max_attempts: 8,
            poll: Duration::from_secs(1),
            send_timeout: Duration::from_secs(10),
            dashboard_url: None,
            claimer: lease::replica_id(),
            claim_ttl: Duration::from_secs(60),
            fence: None,
        }
    }
}

impl WorkerOptions {
    /// The wait after `failures` failed attempts: `base * 2^(failures-1)` up to the cap,
    /// of which the upper half is random ("equal jitter"), so rows that failed together
    /// spread out, yet none comes back sooner than half its backoff.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        let full = self
            .backoff_base
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_cap);
        let half = full / 2;
        let spread = half.as_millis() as u64 + 1;
        half + Duration::from_millis(getrandom::u64().unwrap_or(0) % spread)
    }
}

/// The running worker. `stop` ends it cleanly; dropping it stops it too.
pub struct Notifier {
    stop: Stop,
    fenced: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Notifier {
    /// Whether the fence lease refused a write, so the worker stopped delivering
    /// (another replica leads now). Start a new worker with a new lease to resume.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Relaxed)
    }

    /// Let every channel finish the send in progress (and record its outcome), then stop.
    pub async fn stop(mut self) {
        self.stop.set();
        for t in std::mem::take(&mut self.tasks) {
            if let Err(e) = t.await {
                tracing::error!(cause = %e, "notification worker panicked");
            }
        }
    }
}

impl Drop for Notifier {
    /// Nothing could stop the workers once their `Notifier` is gone.
    fn drop(&mut self) {
        self.stop.set();
    }
}

/// Start delivering the outbox of the database at `db` (already migrated) to
/// `channels`, fenced by `options.fence` when set. Rows left pending by an earlier run
/// are picked up at once (on PostgreSQL, those a crashed replica had claimed once the
/// claim expires).
pub fn spawn(
    db: &Location,
    channels: &[Channel],
    options: WorkerOptions,
    metrics: Arc<Metrics>,
) -> Result<Notifier, NotifyError> {
    let stop = Stop::default();
    let fenced = Arc::new(AtomicBool::new(false));
    let client = reqwest::Client::builder()
        .timeout(options.send_timeout)
        .user_agent(concat!("driftwarden/", env!("CARGO_PKG_VERSION")))
        // A redirect would resend the body somewhere the config never named.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| NotifyError::Channel {
            channel: "*".into(),
            message: format!("HTTP client: {}", chain(&e)),
        })?;
    // One limiter per interval, keyed by webhook: channels naming one webhook share it.
    let mut pacers: HashMap<Duration, Arc<DefaultKeyedRateLimiter<String>>> = HashMap::new();
    if options.claim_ttl <= options.send_timeout {
        return Err(NotifyError::Channel {
            channel: "*".into(),
            message: format!(
                "the claim TTL ({:?}) must exceed the send timeout ({:?}): raise claim_ttl",
                options.claim_ttl, options.send_timeout
            ),
        });
    }
    let senders = channels
        .iter()
        .map(|c| Sender::new(c, &client, &options))
        .collect::<Result<Vec<_>, _>>()?;
    let conns = off_runtime(|| -> Result<Vec<Conn>, StoreError> {
        let open = || -> Result<Db, StoreError> {
            let conn = outbox::open(db)?;
            Ok(match &options.fence {
                Some(lease) => conn.fenced(lease.clone()),
                None => conn,
            })
        };
        warn_about_unrouted(&open()?, channels)?;
        channels.iter().map(|_| open().map(Conn::new)).collect()
    })?;
    let mut tasks = Vec::new();
    for ((channel, (sender, secrets)), db) in channels.iter().zip(senders).zip(conns) {
        let labels = ChannelLabels {
            channel: channel.name.clone(),
        };
        // The series exists from the start: a worker that never polls shows as 0.
        drop(metrics.outbox_polls.get_or_create(&labels));
        let worker = ChannelWorker {
            name: channel.name.clone(),
            labels,
            pacer: channel.target.pace().map(|(key, every)| {
                let limiter = pacers.entry(every).or_insert_with(|| {
                    let quota = Quota::with_period(every).expect("a pacing interval is not zero");
                    Arc::new(RateLimiter::keyed(quota.allow_burst(NonZeroU32::MIN)))
                });
                (limiter.clone(), key)
            }),
            sender,
            secrets,
            db,
            options: options.clone(),
            metrics: metrics.clone(),
            stop: stop.clone(),
            fenced: fenced.clone(),
            paused_until: None,
        };
        tracing::info!(channel = %channel.name, kind = channel.target.kind(), "notification channel ready");
        tasks.push(tokio::spawn(worker.run()));
    }
    Ok(Notifier {
        stop,
        fenced,
        tasks,
    })
}

/// Rows queued for a channel that is not configured wait until it is; say so.
fn warn_about_unrouted(conn: &Db, channels: &[Channel]) -> Result<(), StoreError> {
    for (name, pending) in outbox::pending_by_channel(conn)? {
        if !channels.iter().any(|c| c.name == name) {
            tracing::warn!(channel = %name, pending, "notifications are queued for a channel that is not configured; they wait until it is");
        }
    }
    Ok(())
}

/// Run `f` on a thread of its own: a PostgreSQL client connects (and closes) by
/// blocking on a runtime of its own, which panics on a thread that drives async tasks,
/// and `spawn` is called from one.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(out) => out,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// One channel's connection to the outbox: used on blocking threads, and dropped on a
/// thread of its own (see [`off_runtime`]), since the last owner is an async task.
struct Conn(Option<Arc<Mutex<Db>>>);

/// Why an outbox query of a worker failed.
#[derive(Debug, thiserror::Error)]
enum QueryError {
    /// The database said no.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The query panicked (a bug); the worker goes on with the next one.
    #[error("the outbox query panicked: {0}")]
    Panicked(String),
}

impl QueryError {
    /// The lease this write was fenced with, when it refused the write.
    fn fenced(&self) -> Option<(&str, i64)> {
        match self {
            QueryError::Store(StoreError::Fenced { lease, token }) => Some((lease, *token)),
            _ => None,
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(db) = self.0.take() {
            std::thread::spawn(move || drop(db));
        }
    }
}

impl Conn {
    fn new(db: Db) -> Conn {
        Conn(Some(Arc::new(Mutex::new(db))))
    }

    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Db) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, QueryError> {
        let conn = self.0.clone().expect("a connection until dropped");
        // A query that panicked poisoned the lock, not the connection: the statement or
        // transaction it was in was rolled back, so the next query may use it.
        let query = move || f(&mut conn.lock().unwrap_or_else(|p| p.into_inner()));
        match tokio::task::spawn_blocking(query).await {
            Ok(result) => Ok(result?),
            Err(e) => {
                let cause = match e.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "no message".into()),
                    Err(e) => e.to_string(),
                };
                Err(QueryError::Panicked(cause))
            }
        }
    }
}

/// How a channel sends, built once.
struct Sender {
    client: reqwest::Client,
    target: Target,
    /// Email only: the SMTP transport.
    mailer: Option<Box<AsyncSmtpTransport<Tokio1Executor>>>,
    /// The channel's name, printed with each console message.
    channel: String,
    dashboard_url: Option<String>,
}

impl Sender {
    /// The sender and the texts its errors must never show.
    fn new(
        channel: &Channel,
        client: &reqwest::Client,
        options: &WorkerOptions,
    ) -> Result<(Sender, Vec<String>), NotifyError> {
        let mut secrets = Vec::new();
        let mut mailer = None;
        match &channel.target {
            Target::Slack { webhook_url }
            | Target::Discord { webhook_url }
            | Target::Teams { webhook_url }
            | Target::WeCom { webhook_url } => {
                secrets = secret_parts(webhook_url.expose_secret());
            }
            Target::Feishu {
                webhook_url,
                secret,
            }
            | Target::DingTalk {
                webhook_url,
                secret,
            } => {
                secrets = secret_parts(webhook_url.expose_secret());
                secrets.extend(secret.iter().map(|s| s.expose_secret().to_string()));
            }
            Target::Telegram { send_url, .. } => secrets = secret_parts(send_url.expose_secret()),
            Target::PagerDuty { url, routing_key } => {
                secrets = secret_parts(url.expose_secret());
                secrets.push(routing_key.expose_secret().to_string());
            }
            Target::Webhook { url } => secrets = secret_parts(url.expose_secret()),
            Target::Email(target) => {
                secrets = secret_parts(target.smtp_url.expose_secret());
                let transport = email::transport(target, options.send_timeout).map_err(|e| {
                    NotifyError::Channel {
                        channel: channel.name.clone(),
                        message: scrub(&e.to_string(), &secrets),
                    }
                })?;
                mailer = Some(Box::new(transport));
            }
            Target::Console => {}
        }
        let sender = Sender {
            client: client.clone(),
            target: channel.target.clone(),
            mailer,
            channel: channel.name.clone(),
            dashboard_url: options.dashboard_url.clone(),
        };
        Ok((sender, secrets))
    }

    async fn send(&self, row: &OutboxRow) -> Result<(), SendError> {
        let (m, client) = (&row.message, &self.client);
        let link = self.dashboard_url.as_deref();
        match &self.target {
            Target::Slack { webhook_url } => {
                webhook::post_json(client, webhook_url, &slack::render(m, link)).await
            }
            Target::Discord { webhook_url } => {
                webhook::post_json(client, webhook_url, &discord::render(m, link)).await
            }
            Target::Teams { webhook_url } => {
                webhook::post_json(client, webhook_url, &teams::render(m, link)).await
            }
            Target::Telegram { send_url, chat_id } => {
                let body = telegram::render(m, chat_id, link);
                webhook::post_json_answered(client, send_url, &body, telegram::check).await
            }
            Target::Feishu {
                webhook_url,
                secret,
            } => {
                // Signed at each attempt: Feishu refuses a timestamp an hour old.
                let secret = secret.as_ref().map(|s| s.expose_secret());
                let body = feishu::render(m, secret, now_ms() / 1000, link);
                webhook::post_json_answered(client, webhook_url, &body, |b| {
                    feishu::REFUSALS.check(b)
                })
                .await
            }
            Target::DingTalk {
                webhook_url,
                secret,
            } => {
                let secret = secret.as_ref().map(|s| s.expose_secret());
                let url = dingtalk::signed_url(webhook_url.expose_secret(), secret, now_ms());
                let request = client.post(url).json(&dingtalk::render(m, link));
                webhook::post(request, |b| dingtalk::REFUSALS.check(b)).await
            }
            Target::WeCom { webhook_url } => {
                let body = wecom::render(m, link);
                webhook::post_json_answered(client, webhook_url, &body, |b| {
                    wecom::REFUSALS.check(b)
                })
                .await
            }
            Target::PagerDuty { url, routing_key } => {
                let events = pagerduty::events(m, routing_key.expose_secret(), link);
                if events.is_empty() {
                    tracing::debug!(channel = %self.channel, "an informational message is not sent to PagerDuty");
                }
                // Each event on its own; a retry resends the earlier ones, which
                // PagerDuty folds into the same alert by their dedup_key.
                for event in &events {
                    webhook::post_json(client, url, event).await?;
                }
                Ok(())
            }
            Target::Webhook { url } => {
                let request = client
                    .post(url.expose_secret())
                    .header(
                        webhook::IDEMPOTENCY_KEY,
                        webhook::idempotency_key(row.id, row.created_ms),
                    )
                    .json(&webhook::render(m));
                webhook::post(request, |_| Ok(())).await
            }
            Target::Email(target) => {
                let mailer = self
                    .mailer
                    .as_ref()
                    .expect("an email sender has its transport");
                email::send(mailer, target, m).await
            }
            Target::Console => console::print(&self.channel, m)
                .map_err(|e| SendError::Transient(format!("stdout: {e}"))),
        }
    }
}

struct ChannelWorker {
    name: String,
    labels: ChannelLabels,
    /// The limiter pacing this channel and its key (the webhook), if its service limits.
    pacer: Option<(Arc<DefaultKeyedRateLimiter<String>>, String)>,
    sender: Sender,
    secrets: Vec<String>,
    db: Conn,
    options: WorkerOptions,
    metrics: Arc<Metrics>,
    stop: Stop,
    /// Shared by the channels: set by the first that a fenced write stopped.
    fenced: Arc<AtomicBool>,
    /// After a 429, nothing goes to this channel before this instant.
    paused_until: Option<Instant>,
}

impl ChannelWorker {
    async fn run(mut self) {
        while !self.is_stopped() {
            let (rows, send_by) = match self.claim().await {
                Ok(claimed) => {
                    self.metrics.outbox_polls.get_or_create(&self.labels).inc();
                    claimed
                }
                Err(e) => {
                    self.query_failed(&e, "claiming due notifications");
                    self.sleep(self.options.poll).await;
                    continue;
                }
            };
            if rows.is_empty() {
                self.refresh_gauges().await;
                let wait = self.idle_wait().await;
                self.sleep(wait).await;
                continue;
            }
            let claimed = rows.len();
            let mut done = 0;
            for row in &rows {
                if !self.pace().await {
                    break;
                }
                if send_by.is_some_and(|by| Instant::now() >= by) {
                    // The claim could lapse during this send (a paced channel's long
                    // batch): claim the rest anew instead.
                    break;
                }
                let outcome = self.sender.send(row).await;
                let failed = outcome.is_err();
                self.record(row, outcome).await;
                done += 1;
                if failed {
                    // Rows go out in order: the rest waits for this one's retry (or
                    // its death), and after a 429 for the pause.
                    break;
                }
            }
            if done < claimed {
                self.release().await;
            }
            self.refresh_gauges().await;
        }
    }

    /// Claim the channel's due rows, on the store's clock.
    /// Claim the channel's due rows, on the store's clock, and the instant after which
    /// no send may start under this claim (`None`: the claim never lapses for another
    /// claimer, on SQLite).
    async fn claim(&self) -> Result<(Vec<OutboxRow>, Option<Instant>), QueryError> {
        let (name, claimer) = (self.name.clone(), self.options.claimer.clone());
        let ttl = self.options.claim_ttl;
        // Taken before the claim, so the local deadline is never later than the stored.
        let send_by = Instant::now() + ttl.saturating_sub(self.options.send_timeout);
        let ttl_ms = ttl.as_millis() as i64;
        self.db
            .call(move |c| {
                let (claim_ms, send_by) = match c.dialect() {
                    Dialect::Postgres => (ttl_ms, Some(send_by)),
                    // One process delivers a SQLite store (see `claim_ttl`).
                    Dialect::Sqlite => (0, None),
                };
                let now = outbox::clock_ms(c)?;
                let rows = outbox::claim(c, &name, &claimer, now, claim_ms, BATCH)?;
                Ok((rows, send_by))
            })
            .await
    }

    /// Give up the claims on the rest of a batch that stopped early, so they are due
    /// again at once (for this worker after a retry, for the next one after a stop).
    async fn release(&self) {
        let (name, claimer) = (self.name.clone(), self.options.claimer.clone());
        if let Err(e) = self
            .db
            .call(move |c| outbox::release(c, &name, &claimer))
            .await
        {
            self.query_failed(&e, "releasing claims");
        }
    }

    /// Stopped (or the `Notifier` is gone).
    fn is_stopped(&self) -> bool {
        self.stop.is_set()
    }

    /// Sleep, or return early when the worker is stopped.
    async fn sleep(&mut self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.stop.stopped() => {}
        }
    }

    /// Log and count a failed outbox query (the worker retries it), or, when the fence
    /// refused a write, stop every channel (their writes would be refused too).
    fn query_failed(&self, e: &QueryError, what: &'static str) {
        if let Some((lease, token)) = e.fenced() {
            self.stop.set();
            if !self.fenced.swap(true, Ordering::Relaxed) {
                tracing::warn!(channel = %self.name, lease, token, claimer = %self.options.claimer, query = what, "the lease fencing notification delivery is no longer held: another replica leads; delivery stops here");
            }
            return;
        }
        self.metrics
            .outbox_query_errors
            .get_or_create(&self.labels)
            .inc();
        tracing::error!(channel = %self.name, cause = %e, query = what, "an outbox query failed");
    }

    /// Until the next row is due, at most one poll interval (new rows arrive from
    /// other connections without a signal).
    async fn idle_wait(&self) -> Duration {
        let name = self.name.clone();
        let next = match self.db.call(move |c| outbox::next_due_ms(c, &name)).await {
            Ok(next) => next,
            Err(e) => {
                self.query_failed(&e, "next due time");
                None
            }
        };
        match next {
            Some(at) => Duration::from_millis((at - now_ms()).max(0) as u64).min(self.options.poll),
            None => self.options.poll,
        }
    }

    /// Wait out a 429 pause and the service's pacing. False when stopped meanwhile.
    async fn pace(&mut self) -> bool {
        if let Some(until) = self.paused_until.take() {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = self.stop.stopped() => return false,
            }
        }
        if let Some((pacer, key)) = &self.pacer {
            tokio::select! {
                _ = pacer.until_key_ready(key) => {}
                _ = self.stop.stopped() => return false,
            }
        }
        !self.is_stopped()
    }

    async fn record(&mut self, row: &OutboxRow, outcome: Result<(), SendError>) {
        let id = row.id;
        let failures = row.attempts + 1;
        match outcome {
            Ok(()) => {
                self.persist(id, move |c, claimer| {
                    outbox::mark_sent(c, claimer, id, outbox::clock_ms(c)?)
                })
                .await;
                self.metrics
                    .notifications_sent
                    .get_or_create(&self.labels)
                    .inc();
                tracing::info!(channel = %self.name, outbox_id = id, failed_before = row.attempts, "notification sent");
            }
            Err(e) => {
                self.metrics
                    .notification_failures
                    .get_or_create(&self.labels)
                    .inc();
                let error = scrub(&e.to_string(), &self.secrets);
                let permanent = matches!(e, SendError::Permanent(_));
                if permanent || failures >= self.options.max_attempts {
                    let stored = error.clone();
                    self.persist(id, move |c, claimer| {
                        outbox::mark_dead(c, claimer, id, failures, &stored)
                    })
                    .await;
                    self.metrics
                        .notifications_dead
                        .get_or_create(&self.labels)
                        .inc();
                    tracing::error!(channel = %self.name, outbox_id = id, attempts = failures, permanent, error = %error, "notification given up (dead)");
                    return;
                }
                let wait = match e {
                    SendError::RateLimited {
                        retry_after: Some(d),
                        ..
                    } => {
                        self.paused_until = Some(Instant::now() + d);
                        d
                    }
                    _ => self.options.backoff(failures),
                };
                let wait_ms = wait.as_millis() as i64;
                let stored = error.clone();
                self.persist(id, move |c, claimer| {
                    let next = outbox::clock_ms(c)? + wait_ms;
                    outbox::mark_retry(c, claimer, id, failures, next, &stored)
                })
                .await;
                tracing::warn!(channel = %self.name, outbox_id = id, attempts = failures, retry_in_ms = wait.as_millis() as u64, error = %error, "notification failed; will retry");
            }
        }
    }

    /// Write an outcome of row `id` under this worker's claim, retrying while the
    /// database is busy or unreachable: losing a "sent" mark would send the message
    /// again. Not retried when the fence refused it.
    async fn persist(
        &self,
        id: i64,
        f: impl Fn(&Db, &str) -> Result<bool, StoreError> + Send + Sync + 'static,
    ) {
        let f = Arc::new(f);
        for attempt in 1.. {
            let (g, claimer) = (f.clone(), self.options.claimer.clone());
            match self.db.call(move |c| g(c, &claimer)).await {
                Ok(true) => return,
                Ok(false) => {
                    // Its claim expired and another claimer took the row over: that one
                    // sends it (again, if this send went out too).
                    tracing::warn!(channel = %self.name, outbox_id = id, claimer = %self.options.claimer, "an outbox row's claim was taken over before its outcome was recorded; its new claimer delivers it");
                    return;
                }
                Err(e) => {
                    self.query_failed(&e, "recording a delivery outcome");
                    if e.fenced().is_some() || (self.is_stopped() && attempt >= 3) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn refresh_gauges(&self) {
        let name = self.name.clone();
        let (pending, dead) = match self.db.call(move |c| outbox::backlog(c, &name)).await {
            Ok(backlog) => backlog,
            Err(e) => return self.query_failed(&e, "backlog"),
        };
        self.metrics
            .outbox_pending
            .get_or_create(&self.labels)
            .set(pending as i64);
        self.metrics
            .outbox_dead
            .get_or_create(&self.labels)
            .set(dead as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let o = WorkerOptions {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(600),
            ..WorkerOptions::default()
        };
        for (failures, full) in [
            (1, 1_000),
            (2, 2_000),
            (4, 8_000),
            (10, 512_000),
            (40, 600_000),
        ] {
            for _ in 0..20 {
                let d = o.backoff(failures).as_millis() as u64;
                assert!(
                    (full / 2..=full).contains(&d),
                    "{failures}: {d} not in {full}/2..={full}"
                );
            }
        }
        let spread: std::collections::BTreeSet<_> = (0..20).map(|_| o.backoff(10)).collect();
        assert!(spread.len() > 1, "jitter varies");
    }
}
