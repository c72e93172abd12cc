//! `driftwarden demo`: the daemon on a temporary store, following a simulated New API
//! gateway's `logs` table in its own SQLite file, while a story of drifts plays on an
//! accelerated clock.
//!
//! The simulated gateway writes days of normal traffic first (as fast as the daemon
//! takes it), then the story's last two days of data time in 70 seconds. Every
//! row goes through the gateway-database follower exactly as a real New API's would;
//! eval scores go to `POST /v1/evals` and the announced deploy to `POST /recalibrate`,
//! each once the follower has stored the requests before it, so the daemon sees the
//! records in the order a live gateway and eval pipeline would produce them. All data
//! times stay at or before now; the analysis runs on the data clock while rows flow.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat};
use serde_json::{Value, json};

use crate::alerts::RoutingParams;
use crate::config::{Config, ConfigError, FileConfig, GatewayDbEntry, IdentityConfig, Overrides};
use crate::daemon::DaemonError;
use crate::domain::{ChangeEvent, ChangeKind, EvalScore, Kind, Scope, UsageEvent};
use crate::notify::{Channel, Target};
use crate::sim::scenarios::{incident, scope, silent};
use crate::sim::{
    DAY_MS, Effect, Filter, Injection, NewApiLogWriter, Profile, Scenario, SimError, SimRecord,
    Truth,
};
use crate::sources::gateway_db::Flavour;
use crate::stop::Stop;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// Days of normal traffic before the story. Seasonal slots need two days of values,
/// and weekend slots are their own: a week holds two of each.
pub const HISTORY_DAYS: i64 = 7;
/// Days of data time the story covers; it ends at the moment the demo starts.
pub const STORY_DAYS: i64 = 2;
/// Wall time the story's days are played in.
pub const STORY_WALL: Duration = Duration::from_secs(70);
/// Mean requests per minute at the simulated gateway's busiest hour.
const PEAK_RPM: f64 = 40.0;
/// History is written in chunks this long (data time) as fast as the daemon follows.
const HISTORY_CHUNK_MS: i64 = 3 * HOUR_MS;
/// The story is written in chunks this long, each at its time on the accelerated clock.
const STORY_CHUNK_MS: i64 = 15 * MINUTE_MS;
/// How often the follower polls the gateway table: small, so a chunk is stored quickly.
const FOLLOW_POLL_MS: u64 = 50;
/// Longest wait for the daemon to start or to store a chunk before the demo gives up.
const PATIENCE: Duration = Duration::from_secs(60);
/// Routing's group wait and interval in the demo, seconds: notifications within
/// seconds, as the story plays days in a minute.
const GROUP_WAIT_S: u64 = 1;
const GROUP_INTERVAL_S: u64 = 5;
/// The tenant that spikes: rank 15 of 20 (`tenant-16`), a small one.
const SPIKING_TENANT_RANK: u32 = 15;

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Seed of the simulated traffic: the same seed plays the same requests.
    pub seed: u64,
    /// Address of the daemon's HTTP API and dashboard (port 0: any free port).
    pub listen: SocketAddr,
    /// Stop the daemon when the story is over instead of serving until interrupted.
    pub exit: bool,
    /// Play the story as if the demo started at this instant (ms since the Unix
    /// epoch): the story ends there and the process's clock runs on from it.
    /// `None`: now.
    pub start_ms: Option<i64>,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The temporary directory or a rules file could not be written.
    #[error("demo files in {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The address could not be bound.
    #[error(
        "cannot listen on {addr}: {source} (pick another address with --listen, e.g. 127.0.0.1:0)"
    )]
    Bind {
        /// The address asked for.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The simulated gateway failed.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// The demo's configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The shipped rules could not be written into the demo's directory.
    #[error(transparent)]
    Rules(#[from] crate::shipped_rules::ShippedError),
    /// The daemon stopped with an error.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// A request to the demo's daemon failed.
    #[error("demo daemon at {url}: {message}")]
    Http {
        /// The endpoint.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The daemon did not start or store a chunk in time.
    #[error("the demo daemon did not {0} within {PATIENCE:?}")]
    Timeout(&'static str),
    /// A demo task panicked or was cancelled.
    #[error("demo task failed: {0}")]
    Task(String),
}

/// One chapter of the story: when it begins (data time) and what the narrator says.
#[derive(Debug, Clone, PartialEq)]
pub struct Chapter {
    /// Data time, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The narration line.
    pub text: String,
}

/// The traffic, the planted drifts, the announced deploy and the narration.
#[derive(Debug, Clone)]
pub struct Story {
    /// Normal traffic from `history_start_ms` to `end_ms` with the story's injections
    /// and change events.
    pub scenario: Scenario,
    /// Narration, in time order.
    pub chapters: Vec<Chapter>,
    /// First instant of traffic.
    pub history_start_ms: i64,
    /// First instant of the story (history before it is written unpaced).
    pub story_start_ms: i64,
    /// End of the traffic: the minute the demo started.
    pub end_ms: i64,
    /// The tenant whose traffic spikes.
    pub spiking_tenant: String,
}

impl Story {
    /// The story ending at `now_ms` (rounded down to the minute).
    ///
    /// The profile's daily rhythm is turned so the story's first day begins at the
    /// simulated gateway's midnight, whatever the UTC time of the run: the chapters
    /// then always fall in busy hours. Weekends are as busy as weekdays so the story
    /// reads the same on any day of the week.
    pub fn new(now_ms: i64) -> Story {
        let end_ms = now_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        let story_start_ms = end_ms - STORY_DAYS * DAY_MS;
        let history_start_ms = story_start_ms - HISTORY_DAYS * DAY_MS;
        let base = Profile::default();
        let shift = story_start_ms.rem_euclid(DAY_MS) / HOUR_MS;
        let hourly = (0..24)
            .map(|h| base.hourly[(h - shift).rem_euclid(24) as usize])
            .collect();
        let profile = Profile {
            start_ms: history_start_ms,
            days: (HISTORY_DAYS + STORY_DAYS) as f64,
            peak_rpm: PEAK_RPM,
            hourly,
            weekend_factor: 1.0,
            ..base
        };
        let spiking_tenant = profile.tenant_name(SPIKING_TENANT_RANK);
        let at = |day: i64, hour: i64| story_start_ms + (day - 1) * DAY_MS + hour * HOUR_MS;

        let deploy = at(1, 8);
        // The deploy's impact report comes when its evals are judged (warm-up 3 h,
        // evals settle 4 h later); a change detected in an overlapping scope before
        // then would take the report's place, so the bump comes 9 h after the deploy.
        let bump = at(1, 17);
        let evals_off = at(2, 8);
        let spike = (at(2, 11), at(2, 13));
        let burst = (at(2, 16), at(2, 16) + 30 * MINUTE_MS);
        let change = ChangeEvent {
            kind: ChangeKind::Deploy,
            ts_ms: deploy,
            scope: BTreeMap::from([("route".to_string(), "summarize".to_string())]),
            note: "summarize prompt template v2".to_string(),
            origin: "api".to_string(),
        };
        let injections = vec![
            Injection::from(
                deploy,
                Filter::route("summarize"),
                Effect::PromptTokens(1.6),
            ),
            Injection::from(
                bump,
                Filter::model("gpt-4o"),
                Effect::ResolveTo {
                    resolved_model: "gpt-4o-2024-11-20".to_string(),
                    price_multiplier: 1.5,
                },
            ),
            Injection::from(evals_off, Filter::route("classify"), Effect::EvalsStop),
            Injection::from(
                evals_off,
                Filter::route("classify"),
                Effect::PromptTokens(0.6),
            ),
            Injection::window(
                spike.0,
                spike.1,
                Filter::tenant(&spiking_tenant),
                Effect::Volume(8.0),
            ),
            Injection::window(burst.0, burst.1, Filter::all(), Effect::ErrorRate(0.4)),
        ];
        let chapter = |at_ms: i64, text: String| Chapter { at_ms, text };
        let chapters = vec![
            chapter(
                story_start_ms,
                format!(
                    "normal traffic: 4 routes, 3 models, {} tenants; baselines learned from {HISTORY_DAYS} days of history",
                    profile.tenants
                ),
            ),
            chapter(
                deploy,
                "deploy: prompt template v2 of route summarize (prompts ×1.6), announced on POST /recalibrate: expect no drift alert, an impact report after the 3 h warm-up".into(),
            ),
            chapter(
                bump,
                "silent model bump: gpt-4o now resolves to gpt-4o-2024-11-20 at ×1.5 the price, and nobody said so: expect an unannounced change on model gpt-4o".into(),
            ),
            chapter(
                evals_off,
                "evals switched off on route classify while its prompts shrink ×0.6: cost falls; expect false efficiency once its evals are due (4 h)".into(),
            ),
            chapter(
                spike.0,
                format!("{spiking_tenant} sends ×8 its usual traffic for 2 h: expect traffic drift on that tenant, a low tier"),
            ),
            chapter(spike.1, format!("{spiking_tenant} back to normal")),
            chapter(
                burst.0,
                "upstream outage: 40% of all requests fail for 30 min: expect an error-rate alert in the top tier".into(),
            ),
            chapter(burst.1, "outage over".into()),
        ];
        let mut evals_gone = incident(
            "evals switched off on classify while its cost falls",
            (evals_off, None),
            scope("route", "classify"),
            &[Kind::FalseEfficiency, Kind::EvalCoverageDrop],
            8 * 60,
            ("page", "alert"),
        );
        evals_gone.related = vec![scope("model", "gpt-4o-mini")];
        let truth = Truth {
            incidents: vec![
                incident(
                    "gpt-4o silently bumped to a pricier snapshot",
                    (bump, None),
                    scope("model", "gpt-4o"),
                    &[Kind::UnannouncedChange, Kind::CostDrift],
                    120,
                    ("page", "alert"),
                ),
                evals_gone,
                incident(
                    "one tenant's spike",
                    (spike.0, Some(spike.1)),
                    scope("tenant", &spiking_tenant),
                    &[Kind::TrafficDrift],
                    60,
                    ("alert", "digest"),
                ),
                incident(
                    "upstream outage",
                    (burst.0, Some(burst.1)),
                    Scope::new(),
                    &[Kind::StructuralDrift],
                    30,
                    ("page", "page"),
                ),
            ],
            silent: vec![silent(
                "announced deploy",
                (deploy, Some(bump)),
                scope("route", "summarize"),
            )],
        };
        Story {
            scenario: Scenario {
                name: "demo".to_string(),
                profile,
                injections,
                changes: vec![change],
                truth,
            },
            chapters,
            history_start_ms,
            story_start_ms,
            end_ms,
            spiking_tenant,
        }
    }
}

/// Run the demo: start the daemon, play the story, print the summary, then serve
/// until `interrupt` resolves (or stop at once with `exit`). An interrupt during the
/// story stops it early.
pub async fn run(
    opts: DemoOptions,
    interrupt: impl Future<Output = ()> + Send,
) -> Result<(), DemoError> {
    let started = Instant::now();
    let dir = tempfile::tempdir().map_err(|source| DemoError::Io {
        path: std::env::temp_dir().display().to_string(),
        source,
    })?;
    let token = random_token()?;
    if let Some(at_ms) = opts.start_ms {
        // Before the daemon starts: every stage then reads the story's time line.
        crate::clock::start_at(at_ms);
    }
    let story = Story::new(crate::clock::now_ms());
    let config = demo_config(dir.path(), &token)?;
    let gateway_db = dir.path().join("newapi.db");
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| DemoError::Bind {
            addr: opts.listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| DemoError::Bind {
        addr: opts.listen.to_string(),
        source,
    })?;
    let base = format!("http://{addr}");
    say(&format!(
        "driftwarden demo: dashboard at {base}/ · simulated New API gateway at {} · seed {}",
        gateway_db.display(),
        opts.seed
    ));

    // The table exists before the follower starts, as a real gateway's would.
    let gateway = NewApiLogWriter::open(&gateway_db, &story.scenario.profile)?;
    let base_run = base.clone();
    let (stop_daemon, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut daemon = tokio::spawn(crate::daemon::serve_on(config, listener, async move {
        let _ = stopped.await;
    }));
    let cancel = Stop::default();
    let (seed, story_run, cancel_run) = (opts.seed, story, cancel.clone());
    // The blocking HTTP client must be built, used and dropped off the async threads.
    let mut playing = tokio::task::spawn_blocking(move || {
        let player = Player::new(base_run, token, cancel_run)?;
        if player.play(&story_run, gateway, seed, started)? {
            player.summary(&story_run, started)?;
        }
        Ok(())
    });
    tokio::pin!(interrupt);
    let mut interrupted = false;
    let played = tokio::select! {
        p = &mut playing => p,
        d = &mut daemon => return Err(daemon_ended(d)),
        _ = &mut interrupt => {
            interrupted = true;
            cancel.set();
            playing.await
        }
    };
    let outcome = played
        .map_err(|e| DemoError::Task(e.to_string()))
        .and_then(|r| r);
    if outcome.is_ok() && !opts.exit && !interrupted {
        say(&format!(
            "story over; dashboard still at {base}/ — Ctrl-C to quit"
        ));
        tokio::select! {
            _ = &mut interrupt => {}
            d = &mut daemon => return Err(daemon_ended(d)),
        }
    }
    let _ = stop_daemon.send(());
    let served = daemon.await.map_err(|e| DemoError::Task(e.to_string()))?;
    // The daemon has stopped: the temporary directory can go.
    drop(dir);
    outcome?;
    Ok(served?)
}

fn daemon_ended(d: Result<Result<(), DaemonError>, tokio::task::JoinError>) -> DemoError {
    match d {
        Ok(Err(e)) => DemoError::Daemon(e),
        Ok(Ok(())) => DemoError::Task("the daemon stopped before the story was over".into()),
        Err(e) => DemoError::Task(e.to_string()),
    }
}

/// The daemon's configuration: a store and the shipped rules in `dir`, the simulated
/// gateway's table followed from its first row, console channels standing in for the
/// tiers' `slack` and `email`, and notifications routed within a second.
fn demo_config(dir: &Path, token: &str) -> Result<Config, DemoError> {
    // The shipped rules, so the demo runs from any working directory.
    let rules = dir.join("rules");
    crate::shipped_rules::write_new(&rules)?;
    let profile = Profile::default();
    // The simulated gateway's user names are not secrets: show them as they are
    // rather than as salted hashes, so alerts name `tenant-16`.
    let aliases = (0..profile.tenants)
        .map(|rank| (profile.tenant_name(rank), profile.tenant_name(rank)))
        .collect();
    let file = FileConfig {
        db: Some(dir.join("driftwarden.db").display().to_string()),
        rules: Some(rules),
        token: Some(token.into()),
        // The history reaches back further than the default 7 days.
        retention_days: Some(30),
        gateway_db: vec![GatewayDbEntry {
            url: format!("sqlite://{}", dir.join("newapi.db").display())
                .as_str()
                .into(),
            flavour: Flavour::Newapi,
            table: "logs".into(),
            start: Some("first".into()),
            poll_ms: Some(FOLLOW_POLL_MS),
            batch_rows: None,
            // NewApiLogWriter numbers channels in the order providers first appear.
            channels: BTreeMap::from([
                ("1".to_string(), "openai".to_string()),
                ("2".to_string(), "anthropic".to_string()),
            ]),
        }],
        identity: IdentityConfig { aliases },
        routing: RoutingParams {
            group_wait_seconds: GROUP_WAIT_S,
            group_interval_seconds: GROUP_INTERVAL_S,
            ..RoutingParams::default()
        },
        ..FileConfig::default()
    };
    let mut config = Config::resolve(file, Overrides::default())?;
    // Only consoles: a demo must never post to a real Slack or mailbox, even when the
    // environment configures one.
    config.channels = ["slack", "email"]
        .into_iter()
        .map(|name| Channel {
            name: name.to_string(),
            target: Target::Console,
        })
        .collect();
    Ok(config)
}

fn random_token() -> Result<String, DemoError> {
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw).map_err(|e| DemoError::Io {
        path: "the random token".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// One line on stdout, flushed so it interleaves with the console channels' messages.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the demo.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The narrator's clock: weekday, day and time of a data instant (UTC).
fn story_time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%a %d %b %H:%M")
        .to_string()
}

/// The simulated gateway and eval pipeline, talking to the demo's daemon.
struct Player {
    http: reqwest::blocking::Client,
    base: String,
    token: String,
    cancel: Stop,
}

impl Player {
    fn new(base: String, token: String, cancel: Stop) -> Result<Player, DemoError> {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| DemoError::Http {
                url: base.clone(),
                message: e.to_string(),
            })?;
        Ok(Player {
            http,
            base,
            token,
            cancel,
        })
    }

    /// Write the story's rows, evals and change events in time order; history as fast
    /// as the daemon stores it, the story paced to `STORY_WALL`. False when cancelled.
    fn play(
        &self,
        story: &Story,
        mut gateway: NewApiLogWriter,
        seed: u64,
        started: Instant,
    ) -> Result<bool, DemoError> {
        self.wait_ready()?;
        let mut records = story.scenario.generator(seed)?.peekable();
        let mut chapters = story.chapters.iter().peekable();
        let mut changes = story.scenario.changes.iter().peekable();
        // Sim request id to the New API row id the follower will name it by.
        let mut row_of: HashMap<String, i64> = HashMap::new();
        let mut rows = 0i64;
        let mut story_began: Option<Instant> = None;
        say(&format!(
            "writing {HISTORY_DAYS} days of normal traffic into the gateway's logs table…"
        ));
        let mut from = story.history_start_ms;
        while from < story.end_ms {
            if self.cancel.is_set() {
                return Ok(false);
            }
            let in_story = from >= story.story_start_ms;
            if in_story && story_began.is_none() {
                say(&format!(
                    "history stored ({rows} requests) in {:.1} s; the story plays {STORY_DAYS} days of data time in {} s",
                    started.elapsed().as_secs_f64(),
                    STORY_WALL.as_secs()
                ));
                story_began = Some(Instant::now());
            }
            let to = if in_story {
                (from + STORY_CHUNK_MS).min(story.end_ms)
            } else {
                (from + HISTORY_CHUNK_MS).min(story.story_start_ms)
            };
            while let Some(c) = chapters.next_if(|c| c.at_ms < to) {
                say(&format!("\n▶ {}  {}", story_time(c.at_ms), c.text));
            }
            while let Some(c) = changes.next_if(|c| c.ts_ms < to) {
                self.post_change(c)?;
            }
            let mut events: Vec<UsageEvent> = Vec::new();
            let mut evals: Vec<EvalScore> = Vec::new();
            while let Some(r) = records.next_if(|r| r.ts_ms() < to) {
                match r {
                    SimRecord::Usage(e) => events.push(e),
                    SimRecord::Eval(e) => evals.push(e),
                }
            }
            for e in &events {
                rows += 1;
                row_of.insert(e.id.to_string(), rows);
            }
            gateway.insert(&events)?;
            self.wait_stored(rows)?;
            let bodies: Vec<Value> = evals
                .iter()
                .filter_map(|e| {
                    let row = row_of.remove(e.request_id.as_deref()?)?;
                    Some(json!({
                        "request_id": format!("newapi:{row}"),
                        "ts": rfc3339(e.ts_ms),
                        "evaluator": e.evaluator,
                        "score": e.score,
                        "passed": e.passed,
                    }))
                })
                .collect();
            self.post("/v1/evals", &Value::Array(bodies))?;
            if let Some(began) = story_began {
                let done = (to - story.story_start_ms) as f64
                    / (story.end_ms - story.story_start_ms) as f64;
                let due = began + STORY_WALL.mul_f64(done);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            from = to;
        }
        self.drain(story.end_ms)?;
        Ok(true)
    }

    /// Wait until the daemon has told everything of the story: its analysis has
    /// judged every bucket up to `end_ms` (the live analysis closes the last ones
    /// once the gateway has been quiet for a while, as it would for a real one);
    /// then its clock has moved on by a group wait and interval, so every
    /// notification group holding a line of the story has flushed into the outbox;
    /// then the outbox holds nothing pending.
    fn drain(&self, end_ms: i64) -> Result<(), DemoError> {
        let deadline = Instant::now() + PATIENCE;
        let mut judged_at: Option<i64> = None;
        let flushed = ((GROUP_WAIT_S + GROUP_INTERVAL_S) * 1000) as i64;
        loop {
            let stats = self.get_json("/v1/stats")?;
            let step = &stats["analysis"];
            let (watermark, at) = (step["watermark_ms"].as_i64(), step["at_ms"].as_i64());
            if judged_at.is_none() && watermark.is_some_and(|w| w >= end_ms) {
                judged_at = at;
            }
            if let (Some(judged), Some(at)) = (judged_at, at)
                && at >= judged + flushed
            {
                let pending = self.get_json("/v1/outbox?state=pending&limit=1")?;
                if pending["notifications"]
                    .as_array()
                    .is_some_and(|rows| rows.is_empty())
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline || self.cancel.is_set() {
                return Err(DemoError::Timeout("judge and notify the story's end"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn http_err(&self, path: &str, e: impl std::fmt::Display) -> DemoError {
        DemoError::Http {
            url: self.url(path),
            message: e.to_string(),
        }
    }

    fn get_text(&self, path: &str) -> Result<String, DemoError> {
        let answer = self
            .http
            .get(self.url(path))
            .send()
            .and_then(|r| r.error_for_status())
            .map_err(|e| self.http_err(path, e))?;
        answer.text().map_err(|e| self.http_err(path, e))
    }

    fn get_json(&self, path: &str) -> Result<Value, DemoError> {
        serde_json::from_str(&self.get_text(path)?).map_err(|e| self.http_err(path, e))
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, DemoError> {
        let answer = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .and_then(|r| r.error_for_status())
            .map_err(|e| self.http_err(path, e))?;
        answer.json().map_err(|e| self.http_err(path, e))
    }

    fn post_change(&self, c: &ChangeEvent) -> Result<(), DemoError> {
        let body = json!({
            "kind": c.kind.as_str(),
            "ts": rfc3339(c.ts_ms),
            "scope": c.scope,
            "note": c.note,
        });
        self.post("/recalibrate", &body)?;
        tracing::debug!(
            kind = c.kind.as_str(),
            ts_ms = c.ts_ms,
            "demo posted a change event"
        );
        Ok(())
    }

    fn wait_ready(&self) -> Result<(), DemoError> {
        let deadline = Instant::now() + PATIENCE;
        while self.get_text("/healthz").is_err() {
            if Instant::now() > deadline {
                return Err(DemoError::Timeout("start"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Wait until the follower has committed row `row` of the gateway table, so that
    /// evals and change events posted next come after the requests they follow.
    fn wait_stored(&self, row: i64) -> Result<(), DemoError> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let metrics = self.get_text("/metrics")?;
            let last_id = metrics
                .lines()
                .find(|l| l.starts_with("driftwarden_gateway_db_last_id{"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            if last_id >= row as f64 {
                return Ok(());
            }
            if Instant::now() > deadline || self.cancel.is_set() {
                return Err(DemoError::Timeout("store the gateway's rows"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Print what fired, by kind and tier, the change-impact reports and the total time.
    fn summary(&self, story: &Story, started: Instant) -> Result<(), DemoError> {
        let alerts = self.get_json("/v1/alerts?limit=1000")?;
        let changes = self.get_json("/v1/changes")?;
        let fired: Vec<&Value> = alerts["alerts"]
            .as_array()
            .map(|a| a.iter().filter(|a| !a["fired_at"].is_null()).collect())
            .unwrap_or_default();
        let mut by_kind: BTreeMap<(String, u64, String), u32> = BTreeMap::new();
        let mut by_scope: BTreeMap<(String, String), (u64, String, u32)> = BTreeMap::new();
        for a in &fired {
            let kind = a["kind"].as_str().unwrap_or("?").to_string();
            let tier = a["tier"].as_str().unwrap_or("?").to_string();
            let rank = a["tier_rank"].as_u64().unwrap_or(u64::MAX);
            *by_kind
                .entry((kind.clone(), rank, tier.clone()))
                .or_default() += 1;
            let scope = scope_text(&a["scope"]);
            let entry = by_scope
                .entry((kind, scope))
                .or_insert((rank, tier.clone(), 0));
            if rank < entry.0 {
                (entry.0, entry.1) = (rank, tier);
            }
            entry.2 += 1;
        }
        let mut out = String::new();
        out.push_str(&format!(
            "\n════ story over in {:.1} s ════\nalerts fired, by kind and tier ({} in all):\n",
            started.elapsed().as_secs_f64(),
            fired.len()
        ));
        for ((kind, rank, tier), n) in &by_kind {
            out.push_str(&format!("  {kind:<20} {tier:<8} (rank {rank})  {n}\n"));
        }
        out.push_str("by kind and scope (most severe tier, times fired):\n");
        for ((kind, scope), (_, tier, n)) in &by_scope {
            out.push_str(&format!("  {kind:<20} {scope:<36} {tier:<8} ×{n}\n"));
        }
        out.push_str("change-impact reports:\n");
        let mut reports = 0;
        for c in changes["changes"].as_array().into_iter().flatten() {
            if c["impact"].is_null() {
                continue;
            }
            reports += 1;
            out.push_str(&format!(
                "  {} {}  {}\n",
                story_time(c["ts_ms"].as_i64().unwrap_or(0)),
                c["kind"].as_str().unwrap_or("?"),
                c["impact"]["summary"].as_str().unwrap_or("(no summary)")
            ));
        }
        if reports == 0 {
            out.push_str("  none\n");
        }
        out.push_str(&format!(
            "spiking tenant: {}; dashboard: {}/\n",
            story.spiking_tenant, self.base
        ));
        say(&out);
        Ok(())
    }
}

/// A scope object as `model=gpt-4o,route=chat`, or `global`.
fn scope_text(scope: &Value) -> String {
    let parts: Vec<String> = scope
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if parts.is_empty() {
        "global".to_string()
    } else {
        parts.join(",")
    }
}
