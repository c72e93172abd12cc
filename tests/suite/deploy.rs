//! The recipes in `deploy/`, checked the way they are used: each file is parsed, its
//! hardening asserted, and the flags it hands to driftwarden are run on the real binary
//! (paths moved into a temp dir) until the daemon says it is listening. A renamed flag,
//! a moved path or a config key that no longer exists fails here, not on a user's host.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

use common::{TOKEN, WAIT, wait_until};
use serde_json::{Value, json};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn yaml(rel: &str) -> Value {
    serde_yaml_ng::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Environment variables the example configs name for their secrets.
const CONFIG_ENV: [(&str, &str); 3] = [
    (
        "NEWAPI_DSN",
        "postgres://driftwarden:pw@127.0.0.1:5432/newapi",
    ),
    ("SLACK_ONCALL_WEBHOOK", "http://127.0.0.1:9/slack-hook"),
    ("TEAM_SMTP_URL", "smtp://alerts:pw@127.0.0.1:2525?tls=none"),
];

/// The real binary with a clean environment: no config, token or channels of the caller's.
fn driftwarden() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftwarden"));
    for var in [
        "DRIFTWARDEN_CONFIG",
        "DRIFTWARDEN_TOKEN",
        "DRIFTWARDEN_URL",
        "DRIFTWARDEN_SLACK_WEBHOOK",
        "DRIFTWARDEN_SMTP_URL",
        "DRIFTWARDEN_EMAIL_TO",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A daemon started with a recipe's own arguments.
struct Daemon {
    child: Child,
    address: String,
    stderr: PathBuf,
}

impl Daemon {
    /// Run `args` (a recipe's, without the program name) with every `from` path prefix
    /// replaced by its `to` and `--listen` moved to an ephemeral loopback port, and wait
    /// for the ready line. Fails if an absolute path is left pointing outside `dir` and
    /// the repository, so a recipe cannot silently use the host's files.
    fn start(args: &[String], rewrites: &[(String, PathBuf)], dir: &Path) -> Daemon {
        let mut rewrites = rewrites.to_vec();
        rewrites.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        let mut out = Vec::new();
        let mut listen_next = false;
        for arg in args {
            if std::mem::take(&mut listen_next) {
                out.push("127.0.0.1:0".to_string());
                continue;
            }
            listen_next = arg == "--listen";
            let mut arg = arg.clone();
            if let Some((from, to)) = rewrites
                .iter()
                .find(|(from, _)| arg.contains(&format!("{from}/")) || arg.ends_with(from.as_str()))
            {
                arg = arg.replacen(from, &to.display().to_string(), 1);
            }
            let path = arg.strip_prefix("sqlite://").unwrap_or(&arg);
            assert!(
                !path.starts_with('/')
                    || path.starts_with(&*dir.to_string_lossy())
                    || path.starts_with(&*repo().to_string_lossy()),
                "{arg} is a host path the test has no rewrite for"
            );
            out.push(arg);
        }
        let stderr = dir.join("daemon.stderr.log");
        let mut child = driftwarden()
            .args(&out)
            .current_dir(dir)
            .envs(CONFIG_ENV)
            .env("DRIFTWARDEN_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("starting driftwarden");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok));
            for _ in lines {}
        });
        let line = rx.recv_timeout(WAIT).ok().flatten().unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "driftwarden {out:?} did not start; stderr:\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        });
        let address = line
            .strip_prefix("driftwarden listening on ")
            .unwrap_or_else(|| panic!("unexpected ready line {line:?}"))
            .to_string();
        Daemon {
            child,
            address,
            stderr,
        }
    }

    fn get(&self, path: &str) -> reqwest::blocking::Response {
        reqwest::blocking::get(format!("{}{path}", self.address))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn stats(&self) -> Value {
        self.get("/v1/stats").json().expect("stats JSON")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- systemd ----

/// `key = value` lines of a unit file by section, in order (repeated keys kept).
fn unit_directives(unit: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current = String::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(!line.ends_with('\\'), "keep unit lines unwrapped: {line}");
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').expect("key=value");
        sections
            .entry(current.clone())
            .or_default()
            .push((k.to_string(), v.to_string()));
    }
    sections
}

fn service_values(unit: &BTreeMap<String, Vec<(String, String)>>, key: &str) -> Vec<String> {
    unit["Service"]
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

fn service_value(unit: &BTreeMap<String, Vec<(String, String)>>, key: &str) -> String {
    let values = service_values(unit, key);
    assert_eq!(values.len(), 1, "{key}= must be set once: {values:?}");
    values[0].clone()
}

#[test]
fn systemd_unit_is_hardened() {
    let unit = unit_directives(&read("deploy/driftwarden.service"));
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictNamespaces", "yes"),
        ("SystemCallArchitectures", "native"),
        ("StateDirectory", "driftwarden"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(service_value(&unit, key), want, "{key}=");
    }
    assert_ne!(service_value(&unit, "User"), "root");
    assert!(
        service_values(&unit, "SystemCallFilter").contains(&"@system-service".to_string()),
        "SystemCallFilter=@system-service"
    );
    // The only writable path is the state directory, which ProtectSystem=strict exempts.
    for extra in service_values(&unit, "ReadWritePaths") {
        assert_eq!(
            extra, "/var/lib/driftwarden",
            "ReadWritePaths= beyond the data dir"
        );
    }
    // The token comes from a root-only file, never from the unit or the command line.
    assert!(
        !service_values(&unit, "EnvironmentFile").is_empty()
            || !service_values(&unit, "LoadCredential").is_empty(),
        "the token needs an EnvironmentFile= or LoadCredential="
    );
    let exec = service_value(&unit, "ExecStart");
    assert!(
        !exec.contains("--token") && !exec.contains("TOKEN="),
        "{exec}"
    );
    for env in service_values(&unit, "Environment") {
        assert!(!env.contains("TOKEN"), "inline token: {env}");
    }
    assert!(
        exec.contains("--db /var/lib/driftwarden/"),
        "the database must live in the state directory: {exec}"
    );
}

#[test]
fn systemd_exec_start_starts_the_real_binary() {
    let unit = unit_directives(&read("deploy/driftwarden.service"));
    let exec = service_value(&unit, "ExecStart");
    assert!(
        !exec.contains(['"', '\'', '$', '%']),
        "keep ExecStart literal: {exec}"
    );
    let words: Vec<String> = exec.split_whitespace().map(String::from).collect();
    assert_eq!(words[0], "/usr/local/bin/driftwarden");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    // The install steps in the unit's header copy deploy/driftwarden.toml and rules/ to /etc.
    let daemon = Daemon::start(
        &words[1..],
        &[
            (
                "/etc/driftwarden/driftwarden.toml".into(),
                repo().join("deploy/driftwarden.toml"),
            ),
            ("/etc/driftwarden/rules".into(), repo().join("rules")),
            ("/var/lib/driftwarden".into(), state.clone()),
        ],
        dir.path(),
    );
    assert_eq!(daemon.get("/healthz").status().as_u16(), 200);
    assert!(
        state.join("driftwarden.db").exists(),
        "the db lands in the state dir"
    );
    assert!(
        std::fs::read_to_string(&daemon.stderr)
            .unwrap()
            .contains("serving"),
        "the daemon logged its start"
    );
}

#[test]
fn systemd_analyze_accepts_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        // CI installs it (`.ci/run`): there a missing tool is a failure, not a skip.
        assert!(
            !common::in_ci(),
            "systemd-analyze is not installed; CI must install it: `apt-get install -y systemd` in .ci/run"
        );
        // Written straight to stderr: the test harness captures `eprintln!`.
        use std::io::Write;
        let _ = std::io::stderr().write_all(
            b"\nSKIPPED: systemd_analyze_accepts_the_unit: systemd-analyze is not installed \
              (sudo apt-get install -y systemd; with CI=true this is a failure)\n",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart's program exists: point it at the built binary.
    let unit = read("deploy/driftwarden.service").replace(
        "/usr/local/bin/driftwarden",
        env!("CARGO_BIN_EXE_driftwarden"),
    );
    let path = dir.path().join("driftwarden.service");
    std::fs::write(&path, unit).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--generators=no"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
    // An unknown or misspelt key is only a warning to systemd: fail on any output.
    assert_eq!(
        text(&verify).trim(),
        "",
        "systemd-analyze verify complained"
    );
    let security = Command::new("systemd-analyze")
        // The threshold is in tenths of the exposure score shown (20 is 2.0 of 10).
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        security.status.success(),
        "exposure above 2.0:\n{}",
        text(&security)
    );
}

// ---- container image ----

/// One instruction of a Containerfile: the keyword and its (joined) arguments.
type Instruction = (String, String);

/// The stages of a Containerfile, each a list of instructions starting with its FROM.
fn containerfile_stages(text: &str) -> Vec<Vec<Instruction>> {
    let mut joined = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') && joined.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                joined.push_str(part);
                joined.push(' ');
            }
            None => joined.push_str(trimmed),
        }
        if !line.trim_end().ends_with('\\') {
            joined.push('\n');
        }
    }
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in joined.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (kw, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let kw = kw.to_ascii_uppercase();
        if kw == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Containerfile starts with FROM")
            .push((kw, rest.trim().to_string()));
    }
    stages
}

fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("{args} is not exec form (JSON): {e}"))
}

fn find<'a>(stage: &'a [Instruction], kw: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|(k, _)| k == kw)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Each source COPY'd from the build context, with its destination in the image.
fn context_copies(stage: &[Instruction]) -> Vec<(String, String)> {
    let mut copies = Vec::new();
    for args in find(stage, "COPY") {
        if args.starts_with("--") {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        let (dest, sources) = words.split_last().expect("COPY SRC... DEST");
        for src in sources {
            let dest = match dest.strip_suffix('/') {
                Some(dir) if sources.len() > 1 => format!("{dir}/{src}"),
                _ => dest.to_string(),
            };
            copies.push((src.to_string(), dest));
        }
    }
    copies
}

/// The runtime stage's uid: its USER, which must be a number (Kubernetes' runAsNonRoot
/// can only check a numeric user).
fn image_uid() -> u64 {
    let stages = containerfile_stages(&read("deploy/Containerfile"));
    let user = find(stages.last().unwrap(), "USER")
        .last()
        .expect("the runtime stage sets USER")
        .to_string();
    let uid = user.split(':').next().unwrap();
    uid.parse()
        .unwrap_or_else(|_| panic!("USER {user} must be numeric"))
}

#[test]
fn containerfile_builds_in_two_stages_and_runs_as_a_user() {
    let stages = containerfile_stages(&read("deploy/Containerfile"));
    assert_eq!(stages.len(), 2, "a builder and a runtime stage");
    let (builder, runtime) = (&stages[0], &stages[1]);
    assert_eq!(builder[0].1, "rust:1-bookworm AS builder");
    assert!(
        find(builder, "RUN")
            .iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "the builder runs cargo build --release --locked"
    );
    assert_eq!(runtime[0].1, "debian:bookworm-slim");
    assert!(
        find(runtime, "COPY")
            .iter()
            .any(|c| c.starts_with("--from=builder") && c.ends_with("/usr/local/bin/driftwarden")),
        "the runtime stage takes only the binary from the builder"
    );
    let uid = image_uid();
    assert!(uid >= 1000, "USER {uid} must not be root or a system id");
    assert!(
        find(runtime, "RUN")
            .iter()
            .any(|r| r.contains(&format!("--uid {uid}"))),
        "the user with uid {uid} is created in the image"
    );
    assert_eq!(find(runtime, "EXPOSE"), ["7878"]);
    assert_eq!(
        exec_form(find(runtime, "VOLUME")[0]),
        ["/var/lib/driftwarden"]
    );
    assert_eq!(exec_form(find(runtime, "ENTRYPOINT")[0]), ["driftwarden"]);

    // The build context (.dockerignore is an allow-list) holds every COPY source and
    // every file cargo needs, and nothing else at the top level.
    let allowed: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .skip_while(|l| *l == "*")
        .map(|l| {
            l.strip_prefix('!')
                .unwrap_or_else(|| panic!("after `*`, only !allow lines: {l}"))
                .to_string()
        })
        .collect();
    let in_context = |path: &str| {
        let top = path.trim_start_matches("./").split('/').next().unwrap();
        allowed.iter().any(|a| a == top)
    };
    for stage in &stages {
        for (src, _) in context_copies(stage) {
            assert!(in_context(&src), "COPY {src} is excluded by .dockerignore");
            assert!(repo().join(&src).exists(), "COPY {src}: no such file");
        }
    }
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let mut needed = vec!["Cargo.toml".to_string(), "Cargo.lock".into(), "src".into()];
    if let Some(benches) = manifest.get("bench").and_then(|b| b.as_array()) {
        needed.extend(benches.iter().map(|b| {
            b.get("path")
                .and_then(|p| p.as_str())
                .unwrap_or("benches")
                .to_string()
        }));
    }
    for file in walk(&repo().join("src")) {
        let code = std::fs::read_to_string(&file).unwrap();
        for (i, pattern) in code.match_indices("include_str!(\"") {
            let rest = &code[i + pattern.len()..];
            let rel = &rest[..rest.find('"').unwrap()];
            let target = file.parent().unwrap().join(rel);
            let target = target.canonicalize().expect("include_str! target exists");
            let inside = target
                .strip_prefix(repo())
                .unwrap()
                .to_string_lossy()
                .to_string();
            needed.push(inside);
        }
    }
    let copied: Vec<String> = context_copies(builder)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    for need in needed {
        let top = need.split('/').next().unwrap();
        assert!(
            in_context(top),
            "{need} is needed by cargo but excluded by .dockerignore"
        );
        assert!(
            copied.iter().any(|c| c == top || c == &need),
            "{need} is needed by cargo but not COPY'd into the builder"
        );
    }
    for secret in ["target", ".git", "driftwarden.db", "driftwarden.token"] {
        assert!(
            !in_context(secret),
            "{secret} must stay out of the build context"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Rewrites for a container's paths: each context COPY destination back to its source
/// in the repository, and each VOLUME into the temp dir.
fn image_rewrites(dir: &Path) -> Vec<(String, PathBuf)> {
    let stages = containerfile_stages(&read("deploy/Containerfile"));
    let runtime = stages.last().unwrap();
    let mut rewrites: Vec<(String, PathBuf)> = Vec::new();
    for (src, dest) in context_copies(runtime) {
        rewrites.push((dest, repo().join(src)));
    }
    for volume in exec_form(find(runtime, "VOLUME")[0]) {
        let local = dir.join(volume.trim_start_matches('/').replace('/', "_"));
        std::fs::create_dir_all(&local).unwrap();
        rewrites.push((volume, local));
    }
    rewrites
}

#[test]
fn container_cmd_starts_the_daemon_and_its_healthcheck_passes() {
    let stages = containerfile_stages(&read("deploy/Containerfile"));
    let runtime = stages.last().unwrap();
    let cmd = exec_form(find(runtime, "CMD")[0]);
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&cmd, &image_rewrites(dir.path()), dir.path());
    assert_eq!(daemon.get("/healthz").status().as_u16(), 200);

    let health = find(runtime, "HEALTHCHECK")[0];
    let check = exec_form(&health[health.find("CMD").expect("HEALTHCHECK CMD") + 3..]);
    assert_eq!(
        check[0], "driftwarden",
        "slim has no curl: the binary checks itself"
    );
    let listen = &cmd[cmd.iter().position(|a| a == "--listen").unwrap() + 1];
    let port = listen.rsplit(':').next().unwrap();
    let run_check = |address: &str| {
        let args: Vec<String> = check[1..]
            .iter()
            .map(|a| a.replace(&format!("http://127.0.0.1:{port}"), address))
            .collect();
        driftwarden()
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let ok = run_check(&daemon.address);
    assert!(ok.status.success(), "healthcheck failed: {}", text(&ok));
    let down = run_check("http://127.0.0.1:9");
    assert!(
        !down.status.success(),
        "a dead daemon must fail the healthcheck"
    );
}

// ---- Kubernetes ----

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn mounts(c: &Value) -> BTreeMap<String, String> {
    c["volumeMounts"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap().to_string(),
                        m["mountPath"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn arg_after<'a>(args: &'a [String], flag: &str) -> &'a str {
    &args[args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag}"))
        + 1]
}

#[test]
fn kubernetes_sidecar_shares_the_gateway_volume_and_is_locked_down() {
    let pod = yaml("deploy/kubernetes-sidecar.yaml");
    assert_eq!(pod["kind"], "Pod");
    let sidecar = container(&pod, "driftwarden");
    let gateway = container(&pod, "gateway");
    let args: Vec<String> = serde_json::from_value(sidecar["args"].clone()).unwrap();
    let (gw_mounts, dw_mounts) = (mounts(gateway), mounts(sidecar));
    let shared: Vec<&String> = gw_mounts
        .keys()
        .filter(|v| dw_mounts.contains_key(*v))
        .collect();
    assert_eq!(shared.len(), 1, "one volume mounted in both containers");
    let shared_path = &dw_mounts[shared[0]];
    let source = arg_after(&args, "--gateway-db");
    assert!(
        source.starts_with(&format!("sqlite://{shared_path}/")),
        "the sidecar follows the database on the shared volume: {source}"
    );
    let db = arg_after(&args, "--db");
    assert!(
        dw_mounts
            .values()
            .any(|m| db.starts_with(&format!("{m}/")) && m != shared_path),
        "the database is on driftwarden's own data volume: {db}"
    );

    let port = arg_after(&args, "--listen")
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(sidecar[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(
            sidecar[probe]["httpGet"]["port"].to_string(),
            port,
            "{probe}"
        );
    }
    assert!(sidecar["resources"]["limits"]["memory"].is_string());
    assert!(sidecar["resources"]["requests"]["cpu"].is_string());
    let sc = &sidecar["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        pod["spec"]["securityContext"]["runAsUser"],
        json!(image_uid()),
        "the pod runs as the image's user"
    );

    for env in sidecar["env"].as_array().unwrap() {
        let name = env["name"].as_str().unwrap();
        if name.contains("TOKEN") || name.contains("WEBHOOK") || name.contains("SMTP") {
            assert!(
                env["valueFrom"]["secretKeyRef"].is_object(),
                "{name} must come from a Secret"
            );
        }
    }
    assert!(
        sidecar["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "DRIFTWARDEN_TOKEN"),
        "the token comes from the Secret"
    );
}

#[test]
fn kubernetes_sidecar_args_follow_a_new_api_logs_table() {
    let pod = yaml("deploy/kubernetes-sidecar.yaml");
    let sidecar = container(&pod, "driftwarden");
    let args: Vec<String> = serde_json::from_value(sidecar["args"].clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let shared_path = mounts(sidecar)
        .into_iter()
        .find(|(name, _)| mounts(container(&pod, "gateway")).contains_key(name))
        .unwrap()
        .1;
    let gateway_dir = dir.path().join("gateway");
    std::fs::create_dir(&gateway_dir).unwrap();
    let gateway_db = gateway_dir.join("one-api.db");
    let conn = rusqlite::Connection::open(&gateway_db).unwrap();
    conn.execute_batch(driftwarden::sim::NEWAPI_SCHEMA).unwrap();

    let mut rewrites = image_rewrites(dir.path());
    rewrites.push((shared_path, gateway_dir));
    let daemon = Daemon::start(&args, &rewrites, dir.path());
    let port = arg_after(&args, "--listen").rsplit(':').next().unwrap();
    let probe = sidecar["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .unwrap();
    assert_eq!(daemon.get(probe).status().as_u16(), 200, "probe on :{port}");

    // The follower starts at the table's newest row: wait until it has read the table
    // once, or a row written in between would count as history and be skipped.
    wait_until("the follower has read the logs table", WAIT, || {
        daemon
            .get("/metrics")
            .text()
            .unwrap_or_default()
            .contains("gateway_db_last_success_seconds{")
    });
    // A consume row the gateway writes after the sidecar started becomes an event.
    let now = common::now_ms() / 1000;
    conn.execute(
        "INSERT INTO logs (created_at, type, token_name, model_name, quota, prompt_tokens, completion_tokens, channel_id, \"group\") \
         VALUES (?1, 2, 'prod-key', 'gpt-4o', 1500, 900, 80, 1, 'default')",
        [now],
    )
    .unwrap();
    wait_until("the gateway's row is ingested", WAIT, || {
        daemon.stats()["events"] == 1
    });
}

// ---- example configs ----

fn example_configs() -> Vec<PathBuf> {
    let mut configs: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    configs.sort();
    configs
}

fn check(config: &Path, env: &[(&str, &str)]) -> Output {
    driftwarden()
        .args(["check", "--config"])
        .arg(config)
        .arg("--rules")
        .arg(repo().join("rules"))
        .envs(env.iter().copied())
        .current_dir(repo())
        .output()
        .unwrap()
}

#[test]
fn every_example_config_passes_check_and_keeps_secrets_in_the_environment() {
    let configs = example_configs();
    for name in ["driftwarden.toml", "newapi.toml", "litellm.toml"] {
        assert!(
            configs.iter().any(|c| c.ends_with(name)),
            "deploy/{name} is missing"
        );
    }
    for config in &configs {
        let out = check(config, &CONFIG_ENV);
        assert!(out.status.success(), "{}: {}", config.display(), text(&out));
        assert!(text(&out).contains("model(s) priced"), "{}", text(&out));
        let table: toml::Table = std::fs::read_to_string(config).unwrap().parse().unwrap();
        assert!(
            !table.contains_key("token"),
            "{}: inline token",
            config.display()
        );
        for channel in table
            .get("channel")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten()
        {
            for inline in ["webhook_url", "smtp_url", "url"] {
                assert!(
                    channel.get(inline).is_none(),
                    "{}: use {inline}_env, not an inline {inline}",
                    config.display()
                );
            }
        }
        for source in table
            .get("gateway_db")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten()
        {
            let url = source["url"].as_str().unwrap();
            assert!(
                url.starts_with("env:") || url.starts_with("sqlite:"),
                "{}: a database URL with a password belongs in env:VAR",
                config.display()
            );
        }
    }
}

#[test]
fn newapi_example_follows_the_logs_table_and_alerts_slack() {
    let path = repo().join("deploy/newapi.toml");
    let table: toml::Table = read("deploy/newapi.toml").parse().unwrap();
    let source = &table["gateway_db"].as_array().unwrap()[0];
    assert_eq!(source["flavour"].as_str(), Some("newapi"));
    assert_eq!(source["table"].as_str(), Some("logs"));
    assert!(!source["channels"].as_table().unwrap().is_empty());
    assert_eq!(
        table["newapi"]["quota_per_unit"].as_integer(),
        Some(500_000)
    );
    assert!(
        !table["customer_facing_routes"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let slack = table["channel"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"].as_str() == Some("slack"))
        .expect("a slack channel");
    let var = slack["webhook_url_env"].as_str().unwrap();

    // The variables really are read: without them, check names each one.
    for missing in ["NEWAPI_DSN", var] {
        let env: Vec<(&str, &str)> = CONFIG_ENV
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let out = check(&path, &env);
        assert!(!out.status.success(), "check passed without {missing}");
        assert!(text(&out).contains(missing), "{}", text(&out));
    }
}

#[test]
fn litellm_proxy_config_posts_to_the_daemon_the_example_config_runs() {
    let proxy = yaml("deploy/litellm-proxy-config.yaml");
    let callbacks = proxy["litellm_settings"]["callbacks"].as_array().unwrap();
    assert!(callbacks.contains(&json!("generic_api")), "{callbacks:?}");
    let endpoint = proxy["environment_variables"]["GENERIC_LOGGER_ENDPOINT"]
        .as_str()
        .expect("GENERIC_LOGGER_ENDPOINT");
    let table: toml::Table = read("deploy/litellm.toml").parse().unwrap();
    let listen = table["listen"].as_str().unwrap();
    let path = endpoint
        .strip_prefix(&format!("http://{listen}"))
        .unwrap_or_else(|| panic!("{endpoint} is not where litellm.toml listens ({listen})"));
    assert_eq!(path, "/v1/events?format=litellm");

    // The header, in the GENERIC_LOGGER_HEADERS form the file tells the operator to set.
    let text = read("deploy/litellm-proxy-config.yaml");
    let headers = text
        .lines()
        .find_map(|l| {
            l.trim_start_matches(['#', ' '])
                .strip_prefix("GENERIC_LOGGER_HEADERS=")
        })
        .expect("the file documents GENERIC_LOGGER_HEADERS")
        .trim_matches('"')
        .replace("${DRIFTWARDEN_TOKEN}", TOKEN);

    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "serve",
        "--config",
        repo().join("deploy/litellm.toml").to_str().unwrap(),
        "--db",
        dir.path().join("driftwarden.db").to_str().unwrap(),
        "--rules",
        repo().join("rules").to_str().unwrap(),
        "--listen",
        listen,
    ]
    .map(String::from)
    .to_vec();
    let daemon = Daemon::start(&args, &[], dir.path());
    let record = json!({
        "id": "chatcmpl-deploy-1", "call_type": "acompletion", "stream": false,
        "response_cost": 0.00042, "status": "success", "custom_llm_provider": "openai",
        "total_tokens": 30, "prompt_tokens": 10, "completion_tokens": 20,
        "startTime": common::recent_ms() as f64 / 1000.0,
        "endTime": common::recent_ms() as f64 / 1000.0 + 0.75,
        "model": "openai/gpt-4o", "model_group": "gpt-4o",
        "metadata": {"user_api_key_team_alias": "search-team"},
        "request_tags": ["chat"], "messages": [], "response": null
    });
    let mut req = reqwest::blocking::Client::new()
        .post(format!("{}{path}", daemon.address))
        .header("content-type", "application/json")
        .body(json!([record]).to_string());
    for pair in headers.split(',') {
        let (name, value) = pair.split_once('=').expect("NAME=VALUE");
        req = req.header(name, value);
    }
    let answer: Value = req.send().unwrap().json().unwrap();
    assert_eq!(answer["accepted"], 1, "{answer}");
}

// ---- CI hook ----

#[test]
fn github_actions_example_runs_the_deploy_script_with_its_variables() {
    let workflow = yaml("deploy/ci/github-actions.yml");
    let steps: Vec<&Value> = workflow["jobs"]
        .as_object()
        .expect("jobs")
        .values()
        .flat_map(|job| job["steps"].as_array().unwrap())
        .collect();
    let step = steps
        .iter()
        .find(|s| {
            s["run"]
                .as_str()
                .is_some_and(|r| r.contains("deploy/ci/post-deploy.sh"))
        })
        .expect("a step runs deploy/ci/post-deploy.sh");
    let script = read("deploy/ci/post-deploy.sh");
    let required: Vec<&str> = script
        .lines()
        .filter_map(|l| l.strip_prefix(": \"${"))
        .map(|l| &l[..l.find(":?").unwrap()])
        .collect();
    assert!(required.contains(&"DRIFTWARDEN_TOKEN"), "{required:?}");
    for var in required {
        assert!(step["env"][var].is_string(), "the step must set {var}");
    }
    assert!(
        step["env"]["DRIFTWARDEN_TOKEN"]
            .as_str()
            .unwrap()
            .contains("secrets."),
        "the token comes from the repository's secrets"
    );
}
