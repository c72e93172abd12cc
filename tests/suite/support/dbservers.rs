//! Real PostgreSQL and MariaDB servers for integration tests.
//!
//! Each `PgServer` / `MariaDb` is a private server: its own data dir in a temp dir, its
//! own unix socket there, and a free TCP port on 127.0.0.1 only. The data dir is a copy
//! of a template made once per test process (`initdb` / `mariadb-install-db` are the
//! slow part), and the server is shut down and its files removed when the value drops.
//!
//! PostgreSQL refuses to run as root: when the tests run as root (CI does), initdb and
//! postgres run as the `postgres` system user (set on the child process, as `runuser`
//! would), in directories handed to that user. MariaDB runs as root with `--user=root`.
//!
//! `PgServer::start_tls_for` and `MariaDb::start_tls_for` start a server that requires
//! TLS, with a certificate for `localhost` from the process's throwaway CA
//! ([`test_pki`], made with rcgen).
//!
//! Gating: `PgServer::start_for(test)` and `MariaDb::start_for(test)` return `None`
//! when the server binaries are not installed and `CI` is unset: they print a loud
//! `SKIPPED:` line to stderr and the test returns. With `CI` set (CI=true), a missing
//! binary FAILS the test, naming the packages to install ([`APT_LINE`]).

#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// What CI's `.ci/run` must install for these tests.
pub const APT_LINE: &str = "apt-get install -y postgresql mariadb-server";

/// How long a server may take to accept connections.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// Whether the tests run under CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
        .unwrap_or(false)
}

/// A server binary is missing: fail under CI, else say loudly that the test is skipped.
/// Written straight to the process's stderr: the test harness captures `eprintln!`.
fn missing(test: &str, why: &str) {
    if in_ci() {
        panic!("{test}: {why}. CI must install the database servers: `{APT_LINE}` in .ci/run");
    }
    use std::io::Write;
    static HINTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let mut msg = format!("\nSKIPPED: {test}: {why}\n");
    if !HINTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        msg.push_str(&format!(
            "SKIPPED: the real-database tests need PostgreSQL and MariaDB: sudo {APT_LINE}\n\
             SKIPPED: (with CI=true a missing server is a failure, not a skip)\n"
        ));
    }
    let _ = std::io::stderr().write_all(msg.as_bytes());
}

/// A random-looking secret (letters and digits), distinct per call: passwords that
/// cannot appear anywhere by chance.
pub fn secret(prefix: &str) -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    let a = h.finish();
    h.write_u64(a);
    format!("{prefix}{a:016x}{:08x}", h.finish() as u32)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("finding a free port")
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of a system user, from `id`.
fn user_ids(name: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, name]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// Give `path` (recursively) to `ids`.
fn chown(path: &Path, ids: (u32, u32)) {
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", ids.0, ids.1))
        .arg(path)
        .status()
        .expect("running chown");
    assert!(status.success(), "chown {}", path.display());
}

/// `cp -a from to` (keeps owners and modes).
fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("running cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// Server processes die with the test thread that started them, even if the test
/// process is killed before the drops run.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs in the forked child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the pid of a child that has not been reaped.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Wait for `child` to exit; `false` if it is still running after `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().ok().flatten().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Template dirs live until the test process exits; `atexit` removes them.
static TEMPLATE_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn remove_templates() {
    if let Ok(dirs) = TEMPLATE_DIRS.lock() {
        for d in dirs.iter() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn template_dir(prefix: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("creating a template dir")
        .keep();
    let mut dirs = TEMPLATE_DIRS.lock().unwrap();
    if dirs.is_empty() {
        // SAFETY: registering a plain extern "C" function.
        unsafe {
            libc::atexit(remove_templates);
        }
    }
    dirs.push(dir.clone());
    dir
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

// ---------------------------------------------------------------------------------
// A throwaway PKI for the TLS servers
// ---------------------------------------------------------------------------------

/// One CA and a server certificate it signed for `localhost` (not `127.0.0.1`: a URL
/// with the IP is a name mismatch), and a second CA that signed nothing a server uses.
/// Made once per test process, in a dir removed at exit.
pub struct TestPki {
    /// The CA that signed the servers' certificate (PEM).
    pub ca: PathBuf,
    /// A CA that did not (PEM).
    pub other_ca: PathBuf,
    cert_pem: String,
    key_pem: String,
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("generating a CA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    (params.self_signed(&key).expect("self-signing a CA"), key)
}

/// The process's PKI (see [`TestPki`]).
pub fn test_pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = template_dir("dw-pki-");
        let (ca_cert, ca_key) = ca("driftwarden test CA");
        let (other, _) = ca("driftwarden other CA");
        let key = rcgen::KeyPair::generate().expect("generating a server key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("signing the server certificate");
        let pki = TestPki {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(&pki.ca, ca_cert.pem()).expect("writing ca.pem");
        std::fs::write(&pki.other_ca, other.pem()).expect("writing other-ca.pem");
        pki
    })
}

/// Writes the server certificate and key (mode 0600) into `dir`; returns their paths.
fn write_server_cert(dir: &Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let pki = test_pki();
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert, &pki.cert_pem).expect("writing server.crt");
    std::fs::write(&key, &pki.key_pem).expect("writing server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .expect("chmod 0600 server.key");
    (cert, key)
}

// ---------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct PgInstall {
    bindir: PathBuf,
    /// The user to run as (uid, gid) when we are root.
    run_as: Option<(u32, u32)>,
    /// `initdb`-made data dir, copied for each server.
    template: PathBuf,
}

/// The newest `/usr/lib/postgresql/N/bin` (Debian), else `initdb` on the PATH.
fn pg_bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DRIFTWARDEN_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        return (dir.join("initdb").is_file() && dir.join("postgres").is_file()).then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let initdb = find_in_path("initdb")?;
    let dir = initdb.parent()?.to_path_buf();
    dir.join("postgres").is_file().then_some(dir)
}

fn pg_install() -> Result<PgInstall, String> {
    static INSTALL: OnceLock<Result<PgInstall, String>> = OnceLock::new();
    INSTALL
        .get_or_init(|| {
            let bindir =
                pg_bindir().ok_or("PostgreSQL server binaries (initdb, postgres) not found")?;
            let run_as = if is_root() {
                Some(user_ids("postgres").ok_or(
                    "running as root but there is no `postgres` system user to run PostgreSQL as",
                )?)
            } else {
                None
            };
            let root = template_dir("dw-pg-template-");
            if let Some(ids) = run_as {
                chown(&root, ids);
            }
            let template = root.join("data");
            let mut cmd = Command::new(bindir.join("initdb"));
            cmd.arg("-D")
                .arg(&template)
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ])
                .env("LC_ALL", "C");
            if let Some((uid, gid)) = run_as {
                cmd.uid(uid).gid(gid);
            }
            run(&mut cmd, "initdb")?;
            Ok(PgInstall {
                bindir,
                run_as,
                template,
            })
        })
        .clone()
}

/// A private PostgreSQL server. Superuser `postgres` over the unix socket (trust);
/// TCP on 127.0.0.1 needs a password (scram-sha-256).
pub struct PgServer {
    install: PgInstall,
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    /// The certificate and key files when TLS is on.
    tls: Option<(PathBuf, PathBuf)>,
    /// Whether commits are durable (fsync on, as in production) rather than fast.
    durable: bool,
}

impl PgServer {
    /// Start a server for `test`, or `None` if the binaries are missing (see module doc).
    pub fn start_for(test: &str) -> Option<PgServer> {
        PgServer::start(test, false, false)
    }

    /// Like `start_for`, with a production server's durability (fsync, synchronous
    /// commit, full-page writes: PostgreSQL's defaults) and memory for a benchmark:
    /// 512 MB of shared buffers, and 4 GB of WAL between checkpoints.
    pub fn start_durable_for(test: &str) -> Option<PgServer> {
        PgServer::start(test, false, true)
    }

    /// Like `start_for`, with TLS required over TCP: `ssl = on` with the [`test_pki`]
    /// certificate for `localhost`, and only `hostssl` lines in pg_hba.conf, so a plain
    /// TCP connection is refused ("no encryption").
    pub fn start_tls_for(test: &str) -> Option<PgServer> {
        PgServer::start(test, true, false)
    }

    fn start(test: &str, tls: bool, durable: bool) -> Option<PgServer> {
        let install = match pg_install() {
            Ok(i) => i,
            Err(why) => {
                missing(test, &why);
                return None;
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("dw-pg-")
            .tempdir()
            .expect("creating a temp dir");
        copy_dir(&install.template, &dir.path().join("data"));
        std::fs::create_dir(dir.path().join("sock")).expect("creating the socket dir");
        let tls = tls.then(|| {
            let hba = dir.path().join("data/pg_hba.conf");
            let lines = std::fs::read_to_string(&hba).expect("reading pg_hba.conf");
            let ssl_only: String = lines
                .lines()
                .map(|l| match l.strip_prefix("host ") {
                    Some(rest) => format!("hostssl {rest}\n"),
                    None => format!("{l}\n"),
                })
                .collect();
            std::fs::write(&hba, ssl_only).expect("writing pg_hba.conf");
            // The key must belong to the server's user (chowned below) with mode 0600.
            write_server_cert(dir.path())
        });
        if let Some(ids) = install.run_as {
            chown(dir.path(), ids);
        }
        let mut server = PgServer {
            install,
            dir,
            port: 0,
            child: None,
            tls,
            durable,
        };
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return Some(server),
                // Another process may have taken the port meanwhile: try another.
                Err(e) => last = e,
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data dir's tail of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        read_log(&self.log_path())
    }

    fn spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "PostgreSQL is already running");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the server log");
        let mut cmd = Command::new(self.install.bindir.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path().join("sock"))
            .args(["-h", "127.0.0.1"])
            .args(["-c", "max_connections=40"])
            .args(["-c", "logging_collector=off"])
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a file handle"))
            .stderr(log);
        if self.durable {
            cmd.args(["-c", "shared_buffers=512MB"])
                .args(["-c", "max_wal_size=4GB"]);
        } else {
            cmd.args(["-c", "fsync=off"])
                .args(["-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"])
                .args(["-c", "shared_buffers=32MB"])
                .args(["-c", "max_wal_size=1GB"]);
        }
        if let Some((cert, key)) = &self.tls {
            cmd.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!("ssl_cert_file={}", cert.display()))
                .arg("-c")
                .arg(format!("ssl_key_file={}", key.display()));
        }
        if let Some((uid, gid)) = self.install.run_as {
            cmd.uid(uid).gid(gid);
        }
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| format!("starting postgres: {e}"))?;
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if self.try_admin("postgres").is_ok() {
                return Ok(());
            }
            let child = self.child.as_mut().expect("child");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!(
                    "postgres exited with {status}:\n{}",
                    self.log_tail()
                ));
            }
            if start.elapsed() > READY_LIMIT {
                return Err(format!(
                    "postgres not ready within {READY_LIMIT:?}:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn try_admin(&self, db: &str) -> Result<postgres::Client, postgres::Error> {
        postgres::Config::new()
            .host_path(self.dir.path().join("sock"))
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .connect_timeout(Duration::from_secs(5))
            .connect(postgres::NoTls)
    }

    /// A superuser connection to `db` over the unix socket.
    pub fn admin(&self, db: &str) -> postgres::Client {
        self.try_admin(db)
            .unwrap_or_else(|e| panic!("connecting to PostgreSQL as postgres: {e}"))
    }

    /// Create database `db` and a login role `user` with `password`, owned by the
    /// superuser (the role gets no privileges beyond CONNECT through PUBLIC).
    pub fn create_db_and_role(&self, db: &str, user: &str, password: &str) {
        let mut c = self.admin("postgres");
        c.batch_execute(&format!("CREATE DATABASE {db}"))
            .expect("creating the database");
        c.batch_execute(&format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"))
            .expect("creating the role");
    }

    /// Create database `db` and login role `role` with the grants driftwarden's own
    /// store needs to migrate itself there (docs/replicas.md: CONNECT through PUBLIC,
    /// CREATE on schema public, which PostgreSQL 15 no longer gives PUBLIC). Returns
    /// the role's password.
    pub fn create_store_db(&self, db: &str, role: &str) -> String {
        let pw = secret("pw");
        self.create_db_and_role(db, role, &pw);
        self.admin(db)
            .batch_execute(&format!("GRANT CREATE ON SCHEMA public TO {role}"))
            .expect("granting CREATE on schema public");
        pw
    }

    /// `postgres://user:password@127.0.0.1:PORT/db`.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// What driftwarden shows for `url`: the user, no password.
    pub fn printable_url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }

    /// `pg_ctl stop -m fast`: SIGINT to the postmaster, wait for it to exit.
    pub fn stop_fast(&mut self) {
        let mut child = self.child.take().expect("PostgreSQL is running");
        signal(&child, libc::SIGINT);
        assert!(
            wait_exit(&mut child, Duration::from_secs(30)),
            "PostgreSQL did not stop within 30 s of a fast shutdown:\n{}",
            self.log_tail()
        );
    }

    /// Start the stopped server again on the same port and data dir.
    pub fn start_again(&mut self) {
        self.spawn()
            .unwrap_or_else(|e| panic!("restarting PostgreSQL: {e}"));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown; SIGKILL if that hangs.
            signal(&child, libc::SIGQUIT);
            if !wait_exit(&mut child, Duration::from_secs(10)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// MariaDB
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct MyInstall {
    mariadbd: PathBuf,
    template: PathBuf,
}

/// Server options shared by `mariadb-install-db` and `mariadbd`: small and unsynced.
const MY_OPTS: &[&str] = &[
    "--innodb-log-file-size=8M",
    "--innodb-buffer-pool-size=64M",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--skip-log-bin",
    "--skip-name-resolve",
];

fn my_install() -> Result<MyInstall, String> {
    static INSTALL: OnceLock<Result<MyInstall, String>> = OnceLock::new();
    INSTALL
        .get_or_init(|| {
            let mariadbd = find_in_path("mariadbd")
                .or_else(|| find_in_path("mysqld"))
                .ok_or("MariaDB server binary (mariadbd) not found")?;
            let install_db = find_in_path("mariadb-install-db")
                .or_else(|| find_in_path("mysql_install_db"))
                .ok_or("mariadb-install-db not found")?;
            let root = template_dir("dw-mariadb-template-");
            let template = root.join("data");
            let mut cmd = Command::new(install_db);
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", template.display()))
                .arg("--auth-root-authentication-method=normal")
                .arg("--skip-test-db")
                .args(MY_OPTS);
            if is_root() {
                cmd.arg("--user=root");
            }
            run(&mut cmd, "mariadb-install-db")?;
            Ok(MyInstall { mariadbd, template })
        })
        .clone()
}

/// A private MariaDB server. `root` has no password and connects over the unix socket.
pub struct MariaDb {
    install: MyInstall,
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    /// The certificate and key files when TLS is required.
    tls: Option<(PathBuf, PathBuf)>,
}

impl MariaDb {
    /// Start a server for `test`, or `None` if the binaries are missing (see module doc).
    pub fn start_for(test: &str) -> Option<MariaDb> {
        MariaDb::start(test, false)
    }

    /// Like `start_for`, with TLS required over TCP: the [`test_pki`] certificate for
    /// `localhost` and `require_secure_transport=ON` (the unix socket stays allowed).
    pub fn start_tls_for(test: &str) -> Option<MariaDb> {
        MariaDb::start(test, true)
    }

    fn start(test: &str, tls: bool) -> Option<MariaDb> {
        let install = match my_install() {
            Ok(i) => i,
            Err(why) => {
                missing(test, &why);
                return None;
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("dw-mariadb-")
            .tempdir()
            .expect("creating a temp dir");
        copy_dir(&install.template, &dir.path().join("data"));
        let tls = tls.then(|| write_server_cert(dir.path()));
        let mut server = MariaDb {
            install,
            dir,
            port: 0,
            child: None,
            tls,
        };
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return Some(server),
                Err(e) => last = e,
            }
        }
        panic!("MariaDB did not start: {last}");
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mariadbd.sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mariadbd.err")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_tail(&self) -> String {
        read_log(&self.log_path())
    }

    fn spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "MariaDB is already running");
        let d = self.dir.path();
        let mut cmd = Command::new(&self.install.mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", d.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", self.log_path().display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg("--skip-networking=0")
            .arg("--max-connections=60")
            .args(MY_OPTS)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((cert, key)) = &self.tls {
            cmd.arg(format!("--ssl-ca={}", test_pki().ca.display()))
                .arg(format!("--ssl-cert={}", cert.display()))
                .arg(format!("--ssl-key={}", key.display()))
                .arg("--require-secure-transport=ON");
        }
        if is_root() {
            cmd.arg("--user=root");
        }
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|e| format!("starting mariadbd: {e}"))?;
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if self.try_admin().is_ok() {
                return Ok(());
            }
            let child = self.child.as_mut().expect("child");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!(
                    "mariadbd exited with {status}:\n{}",
                    self.log_tail()
                ));
            }
            if start.elapsed() > READY_LIMIT {
                return Err(format!(
                    "mariadbd not ready within {READY_LIMIT:?}:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn try_admin(&self) -> Result<mysql::Conn, mysql::Error> {
        let opts = mysql::OptsBuilder::new()
            .socket(Some(self.socket().display().to_string()))
            .user(Some("root"));
        mysql::Conn::new(opts)
    }

    /// A root connection over the unix socket (no database selected).
    pub fn admin(&self) -> mysql::Conn {
        self.try_admin()
            .unwrap_or_else(|e| panic!("connecting to MariaDB as root: {e}"))
    }

    /// A root connection to database `db`.
    pub fn admin_db(&self, db: &str) -> mysql::Conn {
        let opts = mysql::OptsBuilder::new()
            .socket(Some(self.socket().display().to_string()))
            .user(Some("root"))
            .db_name(Some(db));
        mysql::Conn::new(opts).unwrap_or_else(|e| panic!("connecting to MariaDB {db}: {e}"))
    }

    /// Create database `db` and a user `user`@`%` with `password` and no privileges.
    pub fn create_db_and_user(&self, db: &str, user: &str, password: &str) {
        use mysql::prelude::Queryable;
        let mut c = self.admin();
        c.query_drop(format!("CREATE DATABASE {db} CHARACTER SET utf8mb4"))
            .expect("creating the database");
        c.query_drop(format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"
        ))
        .expect("creating the user");
    }

    /// `mysql://user:password@127.0.0.1:PORT/db`.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("mysql://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// What driftwarden shows for `url`: the user, no password.
    pub fn printable_url(&self, user: &str, db: &str) -> String {
        format!("mysql://{user}@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------
// The gateways' `logs` tables (shared/GATEWAYS.md) and rows for them
// ---------------------------------------------------------------------------------

/// New API's `logs` in PostgreSQL (the integer widths vary on purpose: GORM makes
/// bigint, older schemas integer).
pub const PG_NEWAPI_LOGS: &str = r#"
CREATE TABLE logs (
    id                bigserial PRIMARY KEY,
    user_id           integer,
    created_at        bigint,
    type              integer,
    content           text,
    username          text DEFAULT '',
    token_name        text DEFAULT '',
    model_name        text DEFAULT '',
    quota             integer DEFAULT 0,
    prompt_tokens     integer DEFAULT 0,
    completion_tokens integer DEFAULT 0,
    use_time          integer DEFAULT 0,
    is_stream         boolean DEFAULT false,
    channel_id        integer,
    token_id          integer DEFAULT 0,
    "group"           varchar(64) DEFAULT '',
    ip                varchar(64) DEFAULT '',
    other             text
);
CREATE INDEX idx_created_at_type ON logs (created_at, type);
"#;

/// One API's `logs` in PostgreSQL: no group/ip/other/use_time.
pub const PG_ONEAPI_LOGS: &str = r#"
CREATE TABLE logs (
    id                  bigserial PRIMARY KEY,
    user_id             integer,
    created_at          bigint,
    type                integer,
    content             text,
    username            text DEFAULT '',
    token_name          text DEFAULT '',
    model_name          text DEFAULT '',
    quota               integer DEFAULT 0,
    prompt_tokens       integer DEFAULT 0,
    completion_tokens   integer DEFAULT 0,
    channel_id          integer,
    request_id          varchar(32) DEFAULT '',
    elapsed_time        bigint DEFAULT 0,
    is_stream           boolean DEFAULT false,
    system_prompt_reset boolean DEFAULT false
);
"#;

/// New API's `logs` in MariaDB.
pub const MY_NEWAPI_LOGS: &str = r#"
CREATE TABLE logs (
    id                bigint NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id           int,
    created_at        bigint,
    type              int,
    content           longtext,
    username          varchar(191) DEFAULT '',
    token_name        varchar(191) DEFAULT '',
    model_name        varchar(191) DEFAULT '',
    quota             int DEFAULT 0,
    prompt_tokens     int DEFAULT 0,
    completion_tokens int DEFAULT 0,
    use_time          int DEFAULT 0,
    is_stream         tinyint(1) DEFAULT 0,
    channel_id        int,
    token_id          int DEFAULT 0,
    `group`           varchar(64) DEFAULT '',
    ip                varchar(64) DEFAULT '',
    other             longtext,
    KEY idx_created_at_type (created_at, type)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"#;

/// One API's `logs` in MariaDB.
pub const MY_ONEAPI_LOGS: &str = r#"
CREATE TABLE logs (
    id                  bigint NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id             int,
    created_at          bigint,
    type                int,
    content             longtext,
    username            varchar(191) DEFAULT '',
    token_name          varchar(191) DEFAULT '',
    model_name          varchar(191) DEFAULT '',
    quota               int DEFAULT 0,
    prompt_tokens       int DEFAULT 0,
    completion_tokens   int DEFAULT 0,
    channel_id          int,
    request_id          varchar(32) DEFAULT '',
    elapsed_time        bigint DEFAULT 0,
    is_stream           tinyint(1) DEFAULT 0,
    system_prompt_reset tinyint(1) DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"#;

/// Log types (New API; One API shares 1-4 and uses 5 for channel tests).
pub const TOPUP: i32 = 1;
pub const CONSUME: i32 = 2;
pub const MANAGE: i32 = 3;
pub const ERROR: i32 = 5;

/// One `logs` row. `time` is New API's `use_time` (s) or One API's `elapsed_time` (ms).
#[derive(Debug, Clone)]
pub struct LogRow {
    pub created_at: i64,
    pub kind: i32,
    pub username: String,
    pub token_name: String,
    pub model_name: String,
    pub quota: i32,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub time: i64,
    pub is_stream: bool,
    pub channel_id: i32,
    pub group: String,
    pub other: Option<String>,
}

impl LogRow {
    /// A consume row, as New API writes for a chat completion.
    pub fn consume(created_at: i64) -> LogRow {
        LogRow {
            created_at,
            kind: CONSUME,
            username: "alice".into(),
            token_name: "prod-classifier".into(),
            model_name: "gpt-4o".into(),
            quota: 1335,
            prompt_tokens: 812,
            completion_tokens: 64,
            time: 2,
            is_stream: true,
            channel_id: 7,
            group: "default".into(),
            other: Some(
                r#"{"model_ratio":1.25,"group_ratio":1,"completion_ratio":4,"cache_tokens":0,"frt":412,"is_model_mapped":true,"upstream_model_name":"gpt-4o-2024-08-06"}"#
                    .into(),
            ),
        }
    }

    /// A failed request (New API type 5: quota and tokens 0).
    pub fn error(created_at: i64) -> LogRow {
        LogRow {
            kind: ERROR,
            quota: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            time: 1,
            other: Some(r#"{"status_code":502}"#.into()),
            ..LogRow::consume(created_at)
        }
    }

    /// A row of another type (top-up, manage): not a request.
    pub fn of_type(kind: i32, created_at: i64) -> LogRow {
        LogRow {
            kind,
            model_name: String::new(),
            quota: 500_000,
            prompt_tokens: 0,
            completion_tokens: 0,
            time: 0,
            other: Some(String::new()),
            ..LogRow::consume(created_at)
        }
    }
}

fn content(r: &LogRow) -> String {
    format!("type {} via test", r.kind)
}

/// Insert New API rows in one transaction (a savepoint inside an open transaction);
/// returns their ids in order.
pub fn pg_insert_newapi(c: &mut impl postgres::GenericClient, rows: &[LogRow]) -> Vec<i64> {
    let stmt = c
        .prepare(
            r#"INSERT INTO logs (user_id, created_at, type, content, username, token_name,
               model_name, quota, prompt_tokens, completion_tokens, use_time, is_stream,
               channel_id, token_id, "group", ip, other)
               VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 3, $13, '10.0.0.1', $14)
               RETURNING id"#,
        )
        .expect("preparing the insert");
    let mut tx = c.transaction().expect("begin");
    let ids = rows
        .iter()
        .map(|r| {
            tx.query_one(
                &stmt,
                &[
                    &r.created_at,
                    &r.kind,
                    &content(r),
                    &r.username,
                    &r.token_name,
                    &r.model_name,
                    &r.quota,
                    &r.prompt_tokens,
                    &r.completion_tokens,
                    &(r.time as i32),
                    &r.is_stream,
                    &r.channel_id,
                    &r.group,
                    &r.other,
                ],
            )
            .expect("inserting a row")
            .get::<_, i64>(0)
        })
        .collect();
    tx.commit().expect("commit");
    ids
}

/// Insert One API rows; returns their ids in order.
pub fn pg_insert_oneapi(c: &mut impl postgres::GenericClient, rows: &[LogRow]) -> Vec<i64> {
    let stmt = c
        .prepare(
            r#"INSERT INTO logs (user_id, created_at, type, content, username, token_name,
               model_name, quota, prompt_tokens, completion_tokens, channel_id, request_id,
               elapsed_time, is_stream, system_prompt_reset)
               VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, false)
               RETURNING id"#,
        )
        .expect("preparing the insert");
    let mut tx = c.transaction().expect("begin");
    let ids = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            tx.query_one(
                &stmt,
                &[
                    &r.created_at,
                    &r.kind,
                    &content(r),
                    &r.username,
                    &r.token_name,
                    &r.model_name,
                    &r.quota,
                    &r.prompt_tokens,
                    &r.completion_tokens,
                    &r.channel_id,
                    &format!("2026060112{i:014}"),
                    &r.time,
                    &r.is_stream,
                ],
            )
            .expect("inserting a row")
            .get::<_, i64>(0)
        })
        .collect();
    tx.commit().expect("commit");
    ids
}

/// Insert `n` New API consume rows server-side in one transaction, created at
/// `created_at`; returns the (first, last) id.
pub fn pg_fill_consume(c: &mut postgres::Client, n: i64, created_at: i64) -> (i64, i64) {
    let row = c
        .query_one(
            r#"WITH ins AS (
                 INSERT INTO logs (user_id, created_at, type, content, username, token_name,
                   model_name, quota, prompt_tokens, completion_tokens, use_time, is_stream,
                   channel_id, token_id, "group", ip, other)
                 SELECT 1, $2, 2, '', 'bulk', 'bulk-key', 'gpt-4o-mini', 150, 100 + g % 50, 20,
                        1, false, 3, 4, 'default', '10.0.0.2', '{"frt":100}'
                 FROM generate_series(1::bigint, $1::bigint) AS g
                 RETURNING id)
               SELECT MIN(id), MAX(id), COUNT(*) FROM ins"#,
            &[&n, &created_at],
        )
        .expect("bulk insert");
    assert_eq!(row.get::<_, i64>(2), n, "bulk insert row count");
    (row.get(0), row.get(1))
}

/// Insert New API rows; returns their ids in order.
pub fn my_insert_newapi(c: &mut mysql::Conn, rows: &[LogRow]) -> Vec<i64> {
    use mysql::prelude::Queryable;
    let mut ids = Vec::new();
    for r in rows {
        c.exec_drop(
            "INSERT INTO logs (user_id, created_at, type, content, username, token_name, \
             model_name, quota, prompt_tokens, completion_tokens, use_time, is_stream, \
             channel_id, token_id, `group`, ip, other) \
             VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 3, ?, '10.0.0.1', ?)",
            mysql::Params::Positional(vec![
                r.created_at.into(),
                r.kind.into(),
                content(r).into(),
                r.username.clone().into(),
                r.token_name.clone().into(),
                r.model_name.clone().into(),
                r.quota.into(),
                r.prompt_tokens.into(),
                r.completion_tokens.into(),
                r.time.into(),
                r.is_stream.into(),
                r.channel_id.into(),
                r.group.clone().into(),
                r.other.clone().into(),
            ]),
        )
        .expect("inserting a row");
        ids.push(c.last_insert_id() as i64);
    }
    ids
}

/// Insert One API rows; returns their ids in order.
pub fn my_insert_oneapi(c: &mut mysql::Conn, rows: &[LogRow]) -> Vec<i64> {
    use mysql::prelude::Queryable;
    let mut ids = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        c.exec_drop(
            "INSERT INTO logs (user_id, created_at, type, content, username, token_name, \
             model_name, quota, prompt_tokens, completion_tokens, channel_id, request_id, \
             elapsed_time, is_stream, system_prompt_reset) \
             VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
            mysql::Params::Positional(vec![
                r.created_at.into(),
                r.kind.into(),
                content(r).into(),
                r.username.clone().into(),
                r.token_name.clone().into(),
                r.model_name.clone().into(),
                r.quota.into(),
                r.prompt_tokens.into(),
                r.completion_tokens.into(),
                r.channel_id.into(),
                format!("2026060112{i:014}").into(),
                r.time.into(),
                r.is_stream.into(),
            ]),
        )
        .expect("inserting a row");
        ids.push(c.last_insert_id() as i64);
    }
    ids
}

/// Insert `n` New API consume rows server-side in one statement (MariaDB's SEQUENCE
/// engine), created at `created_at`; returns the (first, last) id.
pub fn my_fill_consume(c: &mut mysql::Conn, n: i64, created_at: i64) -> (i64, i64) {
    use mysql::prelude::Queryable;
    let before: Option<i64> = c
        .query_first("SELECT CAST(COALESCE(MAX(id), 0) AS SIGNED) FROM logs")
        .expect("max id");
    c.query_drop(format!(
        "INSERT INTO logs (user_id, created_at, type, content, username, token_name, \
         model_name, quota, prompt_tokens, completion_tokens, use_time, is_stream, \
         channel_id, token_id, `group`, ip, other) \
         SELECT 1, {created_at}, 2, '', 'bulk', 'bulk-key', 'gpt-4o-mini', 150, 100 + seq % 50, 20, \
                1, 0, 3, 4, 'default', '10.0.0.2', '{{\"frt\":100}}' \
         FROM seq_1_to_{n}"
    ))
    .expect("bulk insert");
    let row: (i64, i64, i64) = c
        .exec_first(
            "SELECT CAST(MIN(id) AS SIGNED), CAST(MAX(id) AS SIGNED), CAST(COUNT(*) AS SIGNED) \
             FROM logs WHERE id > ?",
            (before.unwrap_or(0),),
        )
        .expect("counting the bulk rows")
        .expect("one row");
    assert_eq!(row.2, n, "bulk insert row count");
    (row.0, row.1)
}
