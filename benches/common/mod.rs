//! What the benchmarks in benches/ share: the `--bench` gate, the paths and temp dir
//! every measurement needs, child processes watched with `wait4`, `driftwarden serve`
//! and its ready line, peak RSS (VmHWM), machine info, and the reporting helpers.
//! Included from each bench with `mod common;`; not every bench uses every item.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, ErrorKind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The token `driftwarden serve` gets (the daemon wants at least 16 characters).
pub const TOKEN: &str = "bench-token-4f1c9a7e2b6d8c30";
/// How long `driftwarden serve` may take to print its ready line.
pub const READY_LIMIT: Duration = Duration::from_secs(30);

/// Whether cargo ran this as a benchmark. Under `cargo test --all-targets` (which passes
/// no `--bench`) it says how to run bench `name` and returns false.
pub fn bench_requested(name: &str) -> bool {
    if std::env::args().any(|a| a == "--bench") {
        return true;
    }
    println!("{name} benchmark: run it with `cargo bench --bench {name}` (not run as a test)");
    false
}

/// Paths every measurement needs.
pub struct Bench {
    pub bin: PathBuf,
    pub rules: PathBuf,
    pub tmp: tempfile::TempDir,
}

impl Bench {
    /// The driftwarden binary, the repository's rules, and a new temp dir named `prefix...`.
    pub fn new(prefix: &str) -> Bench {
        Bench {
            bin: PathBuf::from(env!("CARGO_BIN_EXE_driftwarden")),
            rules: Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"),
            tmp: tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .expect("creating a temp dir"),
        }
    }

    pub fn fresh_dir(&self, name: &str) -> PathBuf {
        let dir = self.tmp.path().join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("creating a run dir");
        dir
    }
}

// ---------------------------------------------------------------------------------
// Child processes.

/// A child reaped by `wait4` on a helper thread, so its exit time, status and rusage
/// are exact and a hung child can be killed. Dropping it kills a child still running.
pub struct Watched {
    pub pid: libc::pid_t,
    what: &'static str,
    done: mpsc::Receiver<(Instant, libc::c_int, libc::rusage)>,
    reaped: bool,
}

impl Watched {
    pub fn new(child: &Child, what: &'static str) -> Watched {
        let pid = child.id() as libc::pid_t;
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let mut status = 0;
            // SAFETY: rusage is plain integers; zero is a valid value.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            loop {
                // SAFETY: valid pointers to locals; `pid` is our child, reaped only here.
                let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
                if r == pid {
                    let _ = tx.send((Instant::now(), status, ru));
                    return;
                }
                let err = std::io::Error::last_os_error();
                if err.kind() != ErrorKind::Interrupted {
                    eprintln!("wait4({pid}): {err}");
                    return;
                }
            }
        });
        Watched {
            pid,
            what,
            done,
            reaped: false,
        }
    }

    /// The exit status, if the child has already exited.
    pub fn exited(&mut self) -> Option<libc::c_int> {
        let (_, status, _) = self.done.try_recv().ok()?;
        self.reaped = true;
        Some(status)
    }

    /// Wait for the exit; past `limit`, kill the child and fail.
    pub fn wait(&mut self, limit: Duration) -> (Instant, libc::c_int, libc::rusage) {
        match self.done.recv_timeout(limit) {
            Ok(v) => {
                self.reaped = true;
                v
            }
            Err(_) => {
                // SAFETY: plain syscall on our own child's pid, not yet reaped.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                let _ = self.done.recv_timeout(Duration::from_secs(10));
                self.reaped = true;
                panic!("{} did not finish within {limit:?}; killed it", self.what);
            }
        }
    }

    /// Send `signal`, wait for a clean exit, and return the child's rusage.
    pub fn stop(&mut self, signal: libc::c_int, limit: Duration, stderr: &Path) -> libc::rusage {
        // SAFETY: plain syscall on our own child's pid, not yet reaped.
        unsafe { libc::kill(self.pid, signal) };
        let (_, status, ru) = self.wait(limit);
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            panic!(
                "{} did not exit cleanly ({}); stderr:\n{}",
                self.what,
                describe(status),
                tail(stderr)
            );
        }
        ru
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: plain syscall on our own child's pid, not yet reaped.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self.done.recv_timeout(Duration::from_secs(10));
        }
    }
}

/// Set up a `driftwarden serve` command's token and I/O: no stdin, stdout piped for the
/// ready line, stderr to the file `stderr`.
pub fn serve_io(cmd: &mut Command, stderr: &Path) {
    cmd.env("DRIFTWARDEN_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(stderr).expect("creating the stderr file"));
}

/// Spawn `driftwarden serve` (set up by [`serve_io`]) and wait for its ready line:
/// the watched server and its base URL. Its stdout is drained from then on.
pub fn spawn_serve(cmd: &mut Command, stderr: &Path) -> (Watched, String) {
    let mut child = cmd.spawn().expect("spawning driftwarden serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Watched::new(&child, "driftwarden serve");
    drop(child);

    // The ready line, then keep draining stdout so the server never blocks on it.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    });
    let line = rx.recv_timeout(READY_LIMIT).unwrap_or_default();
    let Some(base) = line.trim().strip_prefix("driftwarden listening on ") else {
        panic!(
            "driftwarden serve did not print its ready line within {READY_LIMIT:?} (got {line:?}); stderr:\n{}",
            tail(stderr)
        );
    };
    (server, base.to_string())
}

/// A blocking HTTP client that ignores proxies.
pub fn http_client(timeout: Duration) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("building the HTTP client")
}

/// `program`, or `taskset -c 0 program` when pinned (taskset execs it: same pid).
pub fn command(program: &Path, pin: bool) -> Command {
    if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// taskset, if present and CPU 0 is ours to pin to.
pub fn taskset() -> Option<PathBuf> {
    let exe = find_on_path("taskset")?;
    let ok = Command::new(&exe)
        .args(["-c", "0", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(exe)
}

/// Whether to skip the pinned run of `section` because taskset is missing; says so.
pub fn skip_pinned(pin: bool, have_taskset: bool, section: &str) -> bool {
    if pin && !have_taskset {
        println!(
            "\n## {section}, 1 core: skipped (taskset not found or CPU 0 not usable; util-linux provides it)"
        );
        return true;
    }
    false
}

pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// A live process's peak RSS so far (`VmHWM` in `/proc/PID/status`), in KiB.
pub fn vm_hwm_kib(pid: libc::pid_t) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

/// Seconds in a `timeval`.
pub fn secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

pub fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    }
}

/// The last lines of a log file, for failure messages.
pub fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

// ---------------------------------------------------------------------------------
// Generated data.

/// xorshift64*: small, fast, and the same everywhere.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Roughly standard normal (Irwin-Hall of four).
    pub fn normal(&mut self) -> f64 {
        let s: f64 = (0..4).map(|_| self.unit()).sum();
        (s - 2.0) * 3f64.sqrt()
    }

    /// Index into `cumulative` weights.
    pub fn pick(&mut self, cumulative: &[u64]) -> usize {
        let r = self.below(*cumulative.last().expect("weights"));
        cumulative.partition_point(|&c| c <= r)
    }

    /// `median * e^(sigma * N(0,1))`, at least 1.
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> u64 {
        ((median * (sigma * self.normal()).exp()).round() as u64).max(1)
    }
}

pub fn cumulative(weights: impl Iterator<Item = u64>) -> Vec<u64> {
    weights
        .scan(0, |acc, w| {
            *acc += w;
            Some(*acc)
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Reporting.

pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub mem_gib: f64,
    pub kernel: String,
    pub commit: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown CPU".into(), |(_, v)| v.trim().to_string());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            mem_gib: mem_kib / (1 << 20) as f64,
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or("?".into(), |s| s.trim().to_string()),
            commit: first_line("git", &["rev-parse", "--short", "HEAD"]).map_or(
                "(no git)".into(),
                |c| match first_line("git", &["status", "--porcelain", "--untracked-files=no"]) {
                    Some(_) => format!("at {c} + uncommitted changes"),
                    None => format!("at {c}"),
                },
            ),
        }
    }

    /// The `machine: ...` line at the start; `what` is the bench's size and runs.
    pub fn print_start(&self, what: &str, bench: &Bench) {
        println!(
            "machine: {} CPUs, {}, {:.1} GiB RAM; {what}; temp dir {}",
            self.nproc,
            self.cpu,
            self.mem_gib,
            bench.tmp.path().display()
        );
    }

    /// `N CPUs (model), M GiB RAM, Linux K`, for the results.
    pub fn summary(&self) -> String {
        format!(
            "{} CPUs ({}), {:.1} GiB RAM, Linux {}",
            self.nproc, self.cpu, self.mem_gib, self.kernel
        )
    }
}

/// The first line `program args` prints on stdout, run in the repository, if it
/// succeeds and prints one.
pub fn first_line(program: impl AsRef<OsStr>, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim().to_string();
    (out.status.success() && !line.is_empty()).then_some(line)
}

/// Print the bench's title, and a note when the machine is already busy.
pub fn print_title(title: &str) {
    println!("# {title}");
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load1: f64 = load
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0.0);
    if load1 > 0.5 {
        println!(
            "note: load average {load1} at start: other work on this machine skews the numbers"
        );
    }
}

/// A markdown table: `head` names the columns, `right` says which are right-aligned.
pub fn print_table(head: &[&str], right: &[bool], rows: &[Vec<String>]) {
    let line = |cells: &[String]| format!("| {} |", cells.join(" | "));
    println!(
        "{}",
        line(&head.iter().map(|h| h.to_string()).collect::<Vec<_>>())
    );
    let seps: Vec<&str> = right
        .iter()
        .map(|&r| if r { "--:" } else { "---" })
        .collect();
    println!("|{}|", seps.join("|"));
    for r in rows {
        println!("{}", line(r));
    }
}

pub fn print_total(started: Instant) {
    println!(
        "\nTotal bench time: {:.0}s",
        started.elapsed().as_secs_f64()
    );
}

pub fn cores_label(pin: bool) -> &'static str {
    if pin {
        "pinned to one core (taskset -c 0)"
    } else {
        "all cores"
    }
}

pub fn cores_cell(pin: bool) -> String {
    if pin {
        "1 (`taskset -c 0`)".into()
    } else {
        std::thread::available_parallelism().map_or("all".into(), |n| n.to_string())
    }
}

pub fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "below" }
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// 1234567.8 as `1,234,568`.
pub fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A positive whole number from the environment (`_` allowed), or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("{name}={v:?} is not a positive whole number")),
        Err(_) => default,
    }
}

/// POST an NDJSON body to `url` with the bench token: the answer's JSON report,
/// panicking (naming `what`) on anything but 200.
pub fn post_ndjson(
    client: &reqwest::blocking::Client,
    url: &str,
    body: impl Into<reqwest::blocking::Body>,
    what: &str,
) -> (serde_json::Value, String) {
    let resp = client
        .post(url)
        .bearer_auth(TOKEN)
        .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
        .body(body)
        .send()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = resp.status();
    let text = resp.text().unwrap_or_default();
    if status != reqwest::StatusCode::OK {
        panic!("{what}: HTTP {status}: {text}");
    }
    let report = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{what}: answer is not JSON ({e}): {text}"));
    (report, text)
}
