//! The examples of `README.md` and `docs/*.md`, checked the way a reader uses them.
//!
//! Every fenced code block is read; its info string says whether and how it is checked
//! (the convention is written down for authors in `docs/README.md`, "Examples are
//! tested"):
//!
//! - ` ```sh `: each command that runs driftwarden must parse with the binary's own
//!   command-line definition (`driftwarden::cli::Cli`); quick offline commands are then
//!   run in the document's working directory and must exit 0. `cargo` lines must name a
//!   real bench, or be `.ci/run`'s test command; `export` sets a variable; other
//!   programs are not run.
//! - ` ```sh,no-run `: as `sh`, parsed only.
//! - ` ```toml `: a config file, checked by `driftwarden check --config`.
//! - ` ```toml,rules `, ` ```toml,tiers `, ` ```toml,pricing `: a file of the rules
//!   directory, checked by `driftwarden check --rules`.
//! - anything else: not checked.
//!
//! Each document runs in its own temporary directory (a copy of the shipped `rules/`),
//! its blocks in order, documents in parallel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use clap::Parser as _;

const BIN: &str = env!("CARGO_BIN_EXE_driftwarden");

/// Subcommands that are quick, offline and leave nothing running: these are run.
const RUNNABLE: [&str; 5] = ["generate", "replay", "check", "import", "digest"];

/// Longest any one example command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A value for variables the docs read but never set (`$DRIFTWARDEN_TOKEN` after an
/// `export X=$(openssl …)`); long enough to pass as an API token.
const PLACEHOLDER: &str = "docs-example-placeholder-0123456789";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------
// Finding the blocks

/// One fenced code block.
#[derive(Debug, Clone)]
struct Block {
    /// The document, relative to the repository.
    file: String,
    /// 1-based line of the opening fence.
    line: usize,
    /// First word of the info string (`sh`, `toml`, `json`, ...).
    lang: String,
    /// The rest of the info string, split on commas (`no-run`, `rules`, ...).
    attrs: Vec<String>,
    /// The content, with the fence's indentation removed.
    text: String,
}

impl Block {
    fn at(&self) -> String {
        let info = std::iter::once(self.lang.as_str())
            .chain(self.attrs.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(",");
        format!("{}:{} (```{info})", self.file, self.line)
    }
}

/// The fenced code blocks of a Markdown text: a fence is three or more backticks or
/// tildes, possibly indented (inside a list item), closed by a line of at least as many
/// of the same character.
fn blocks(file: &str, text: &str) -> Result<Vec<Block>, String> {
    let mut out = Vec::new();
    let mut open: Option<(Block, char, usize, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let fence_char = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = fence_char.map_or(0, |c| trimmed.chars().take_while(|x| *x == c).count());
        match &mut open {
            None if run >= 3 => {
                let c = fence_char.unwrap_or('`');
                let info = trimmed[run..].trim();
                let mut parts = info.split(',').map(|s| s.trim().to_string());
                let lang = parts.next().unwrap_or_default();
                let block = Block {
                    file: file.to_string(),
                    line: i + 1,
                    lang,
                    attrs: parts.filter(|p| !p.is_empty()).collect(),
                    text: String::new(),
                };
                open = Some((block, c, run, indent));
            }
            None => {}
            Some((block, c, n, _))
                if fence_char == Some(*c) && run >= *n && trimmed[run..].trim().is_empty() =>
            {
                out.push(block.clone());
                open = None;
            }
            Some((block, _, _, indent)) => {
                let cut = line.len() - line.trim_start().len();
                block.text.push_str(&line[cut.min(*indent)..]);
                block.text.push('\n');
            }
        }
    }
    match open {
        Some((block, ..)) => Err(format!("{}: the fence is never closed", block.at())),
        None => Ok(out),
    }
}

/// README.md and every Markdown file in docs/.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("readable docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    docs.insert(0, repo().join("README.md"));
    docs
}

// ---------------------------------------------------------------------------------
// Shell commands

/// A piece of a shell word.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Var(String),
    /// `$(...)`: never run; stands for a placeholder.
    Subst,
}

type Word = Vec<Piece>;

/// Split a block into commands of words, as a POSIX shell would for the subset the
/// docs use: quotes (also across lines), `\` escapes and line continuations, `#`
/// comments, `$VAR`, `${VAR}` and `$(...)`; commands end at a newline, `;`, `&` or
/// `&&`. Pipes and redirections are refused: a checked example has none.
fn split_commands(text: &str) -> Result<Vec<Vec<Word>>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut commands = Vec::new();
    let mut command: Vec<Word> = Vec::new();
    let mut word: Option<Word> = None;
    let push_text = |word: &mut Option<Word>, c: char| {
        let w = word.get_or_insert_with(Vec::new);
        match w.last_mut() {
            Some(Piece::Text(t)) => t.push(c),
            _ => w.push(Piece::Text(c.to_string())),
        }
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' if chars.get(i + 1) == Some(&'\n') => i += 1,
            '\\' => {
                if let Some(&next) = chars.get(i + 1) {
                    push_text(&mut word, next);
                    i += 1;
                }
            }
            ' ' | '\t' => command.extend(word.take()),
            '\n' | ';' | '&' => {
                command.extend(word.take());
                if !command.is_empty() {
                    commands.push(std::mem::take(&mut command));
                }
            }
            '|' | '<' | '>' => {
                return Err(format!(
                    "`{c}`: pipes and redirections are not supported in a checked block"
                ));
            }
            '#' if word.is_none() => {
                while i + 1 < chars.len() && chars[i + 1] != '\n' {
                    i += 1;
                }
            }
            '\'' => {
                word.get_or_insert_with(Vec::new);
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    push_text(&mut word, chars[i]);
                    i += 1;
                }
                if i == chars.len() {
                    return Err("a single quote is never closed".into());
                }
            }
            '"' => {
                word.get_or_insert_with(Vec::new);
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    match chars[i] {
                        '\\' if matches!(chars.get(i + 1), Some('"' | '\\' | '$' | '`')) => {
                            push_text(&mut word, chars[i + 1]);
                            i += 1;
                        }
                        '$' => {
                            let (piece, used) = dollar(&chars[i..])?;
                            word.get_or_insert_with(Vec::new).push(piece);
                            i += used - 1;
                        }
                        other => push_text(&mut word, other),
                    }
                    i += 1;
                }
                if i == chars.len() {
                    return Err("a double quote is never closed".into());
                }
            }
            '$' => {
                let (piece, used) = dollar(&chars[i..])?;
                word.get_or_insert_with(Vec::new).push(piece);
                i += used - 1;
            }
            other => push_text(&mut word, other),
        }
        i += 1;
    }
    command.extend(word.take());
    if !command.is_empty() {
        commands.push(command);
    }
    Ok(commands)
}

/// Read `$NAME`, `${NAME}` or `$(...)` at the start of `chars`: the piece and how many
/// characters it took.
fn dollar(chars: &[char]) -> Result<(Piece, usize), String> {
    match chars.get(1) {
        Some('(') => {
            let mut depth = 0;
            for (j, c) in chars.iter().enumerate().skip(1) {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok((Piece::Subst, j + 1));
                        }
                    }
                    _ => {}
                }
            }
            Err("a `$(` is never closed".into())
        }
        Some('{') => {
            let end = chars
                .iter()
                .position(|c| *c == '}')
                .ok_or("a `${` is never closed")?;
            Ok((Piece::Var(chars[2..end].iter().collect()), end + 1))
        }
        _ => {
            let name: String = chars[1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                .collect();
            match name.is_empty() {
                true => Ok((Piece::Text("$".into()), 1)),
                false => Ok((Piece::Var(name.clone()), name.len() + 1)),
            }
        }
    }
}

fn expand(word: &Word, env: &BTreeMap<String, String>) -> String {
    word.iter()
        .map(|p| match p {
            Piece::Text(t) => t.clone(),
            Piece::Var(v) => env.get(v).cloned().unwrap_or_else(|| PLACEHOLDER.into()),
            Piece::Subst => PLACEHOLDER.into(),
        })
        .collect()
}

/// `NAME=VALUE` with a valid variable name.
fn assignment(word: &str) -> Option<(&str, &str)> {
    let (name, value) = word.split_once('=')?;
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then_some((name, value))
}

/// The working directory of one document, and what its blocks set.
struct Session {
    dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
}

impl Session {
    fn new() -> Session {
        let dir = tempfile::tempdir().expect("temporary directory");
        copy_dir(&repo().join("rules"), &dir.path().join("rules"));
        Session {
            dir,
            env: BTreeMap::new(),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read directory") {
        let path = entry.expect("directory entry").path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().expect("file name"))).expect("copy");
        }
    }
}

/// Check a shell block; `run` false parses without running anything.
fn check_sh(text: &str, run: bool, session: &mut Session) -> Result<(), String> {
    for words in split_commands(text)? {
        let mut words: Vec<String> = words.iter().map(|w| expand(w, &session.env)).collect();
        // Leading NAME=VALUE words set variables for this command only.
        let mut local = session.env.clone();
        while let Some((name, value)) = words.first().and_then(|w| assignment(w)) {
            local.insert(name.to_string(), value.to_string());
            words.remove(0);
        }
        let Some(program) = words.first().cloned() else {
            continue;
        };
        let shown = words
            .iter()
            .map(|w| match w.contains(char::is_whitespace) || w.is_empty() {
                true => format!("'{w}'"),
                false => w.clone(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        let result = match program.as_str() {
            "export" => {
                for w in &words[1..] {
                    let (name, value) = assignment(w)
                        .ok_or_else(|| format!("`export {w}`: write export NAME=VALUE"))?;
                    session.env.insert(name.to_string(), value.to_string());
                }
                continue;
            }
            "driftwarden" | "./target/release/driftwarden" | "target/release/driftwarden" => {
                driftwarden(&words[1..], run, &local, session)
            }
            "cargo" => cargo(&words[1..], run, &local, session),
            // curl, openssl, docker, ...: shown to the reader, not run.
            _ => continue,
        };
        result.map_err(|e| format!("`{shown}`: {e}"))?;
    }
    Ok(())
}

fn cargo(
    args: &[String],
    run: bool,
    env: &BTreeMap<String, String>,
    session: &mut Session,
) -> Result<(), String> {
    let flags_only = |rest: &[String]| {
        rest.iter()
            .all(|a| a == "--release" || a == "--locked")
            .then_some(())
            .ok_or_else(|| format!("unexpected cargo arguments {rest:?}"))
    };
    match args.first().map(String::as_str) {
        Some("run") => {
            let dash = args
                .iter()
                .position(|a| a == "--")
                .ok_or("`cargo run` needs `--` before driftwarden's arguments")?;
            flags_only(&args[1..dash])?;
            driftwarden(&args[dash + 1..], run, env, session)
        }
        Some("build") => flags_only(&args[1..]),
        Some("bench") => {
            let at = args
                .iter()
                .position(|a| a == "--bench")
                .ok_or("`cargo bench` without --bench NAME")?;
            let name = args.get(at + 1).ok_or("--bench needs a NAME")?;
            let file = repo().join("benches").join(format!("{name}.rs"));
            match file.exists() {
                true => Ok(()),
                false => Err(format!("there is no bench {name} (benches/{name}.rs)")),
            }
        }
        Some("test") => {
            let ci = std::fs::read_to_string(repo().join(".ci/run")).map_err(|e| e.to_string())?;
            let line = format!("cargo {}", args.join(" "));
            let runs = ci
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("cargo test"))
                .any(|l| line == l || line.starts_with(&format!("{l} ")));
            match runs {
                true => Ok(()),
                false => {
                    Err("not the test command .ci/run runs (nor it with more arguments)".into())
                }
            }
        }
        _ => Err("only cargo run, build, bench and test are known to the docs".into()),
    }
}

fn driftwarden(
    args: &[String],
    run: bool,
    env: &BTreeMap<String, String>,
    session: &mut Session,
) -> Result<(), String> {
    let argv = std::iter::once("driftwarden".to_string()).chain(args.iter().cloned());
    let help = match driftwarden::cli::Cli::try_parse_from(argv) {
        Ok(_) => false,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            true
        }
        Err(e) => return Err(first_lines(&e.to_string(), 3)),
    };
    let sub = args.iter().find(|a| !a.starts_with('-'));
    let runnable = help || sub.is_some_and(|s| RUNNABLE.contains(&s.as_str()));
    if !(run && runnable) {
        return Ok(());
    }
    let out = run_bin(args, session.dir.path(), env)?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "exited with {}: {}",
            out.status,
            first_lines(&String::from_utf8_lossy(&out.stderr), 4)
        )),
    }
}

/// Run the built binary with a clean driftwarden environment plus `env`.
fn run_bin(args: &[String], dir: &Path, env: &BTreeMap<String, String>) -> Result<Output, String> {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars() {
        if name.starts_with("DRIFTWARDEN_") {
            cmd.env_remove(name);
        }
    }
    // Errors only, without backtraces: the first lines say what is wrong.
    cmd.env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .envs(env);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {BIN}: {e}"))?;
    wait_with_timeout(child)
}

fn wait_with_timeout(mut child: std::process::Child) -> Result<Output, String> {
    // Drain the pipes on threads, so a chatty child cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut v).ok();
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut v).ok();
        v
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > COMMAND_TIMEOUT {
            child.kill().ok();
            child.wait().ok();
            return Err(format!("still running after {COMMAND_TIMEOUT:?}: killed"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn first_lines(text: &str, n: usize) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .take(n)
        .collect::<Vec<_>>()
        .join(" / ")
}

// ---------------------------------------------------------------------------------
// TOML files

/// Which file of a configuration a TOML block is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TomlKind {
    Config,
    Rules,
    Tiers,
    Pricing,
}

/// Check a TOML block with `driftwarden check`, in a scratch directory of its own.
/// Variables its `*_env` keys and `env:` URLs name get placeholder values.
fn check_toml(text: &str, kind: TomlKind) -> Result<(), String> {
    let value: toml::Value = toml::from_str(text).map_err(|e| first_lines(&e.to_string(), 4))?;
    let mut env = BTreeMap::new();
    placeholder_env(&value, "", &mut env);
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rules = scratch.path().join("rules");
    std::fs::create_dir(&rules).map_err(|e| e.to_string())?;
    let shipped = repo().join("rules");
    let write = |name: &str, text: &str| std::fs::write(rules.join(name), text);
    let copy = |name: &str| std::fs::copy(shipped.join(name), rules.join(name)).map(|_| ());
    let mut args = vec!["check".to_string()];
    let written = match kind {
        TomlKind::Config => {
            let config = scratch.path().join("driftwarden.toml");
            args.extend(["--config".into(), config.display().to_string()]);
            copy_dir(&shipped, &rules);
            std::fs::write(&config, text)
        }
        TomlKind::Rules => copy("tiers.toml")
            .and_then(|_| copy("pricing.toml"))
            .and_then(|_| write("docs-example.toml", text)),
        TomlKind::Tiers => copy("pricing.toml").and_then(|_| write("tiers.toml", text)),
        TomlKind::Pricing => copy("tiers.toml").and_then(|_| write("pricing.toml", text)),
    };
    written.map_err(|e| e.to_string())?;
    args.extend(["--rules".into(), rules.display().to_string()]);
    let out = run_bin(&args, scratch.path(), &env)?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "driftwarden check failed: {}",
            first_lines(&String::from_utf8_lossy(&out.stderr), 6)
        )),
    }
}

/// Give every variable a TOML value names (`webhook_url_env = "VAR"`, `url = "env:VAR"`)
/// a value of the kind its key expects.
fn placeholder_env(value: &toml::Value, key: &str, env: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                placeholder_env(v, k, env);
            }
        }
        toml::Value::Array(a) => {
            for v in a {
                placeholder_env(v, key, env);
            }
        }
        toml::Value::String(s) => {
            let var = match (key.strip_suffix("_env"), s.strip_prefix("env:")) {
                (Some(_), _) => s.as_str(),
                (None, Some(var)) => var,
                (None, None) => return,
            };
            let example = match key {
                "webhook_url_env" => "https://hooks.slack.com/services/T000/B000/XXXX",
                "smtp_url_env" => "smtp://user:pass@smtp.example.com:587",
                "url_env" => "http://127.0.0.1:9000/driftwarden",
                _ => "sqlite:///nonexistent/one-api.db",
            };
            env.insert(var.to_string(), example.to_string());
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------
// Putting it together

/// Check one block in its document's session; `Ok(false)` when it is not checked.
fn check_block(block: &Block, session: &mut Session) -> Result<bool, String> {
    let attrs: Vec<&str> = block.attrs.iter().map(String::as_str).collect();
    match (block.lang.as_str(), attrs.as_slice()) {
        ("sh", []) => check_sh(&block.text, true, session).map(|_| true),
        ("sh", ["no-run"]) => check_sh(&block.text, false, session).map(|_| true),
        ("toml", []) => {
            check_toml(&block.text, TomlKind::Config)?;
            // The reader saves it: later commands of the document may use it.
            let saved = session.dir.path().join("driftwarden.toml");
            std::fs::write(saved, &block.text).map_err(|e| e.to_string())?;
            Ok(true)
        }
        ("toml", ["rules"]) => check_toml(&block.text, TomlKind::Rules).map(|_| true),
        ("toml", ["tiers"]) => check_toml(&block.text, TomlKind::Tiers).map(|_| true),
        ("toml", ["pricing"]) => check_toml(&block.text, TomlKind::Pricing).map(|_| true),
        ("sh" | "toml", _) => Err(format!(
            "unknown fence attributes {attrs:?}: use sh, sh,no-run, toml, toml,rules, toml,tiers or toml,pricing"
        )),
        _ => Ok(false),
    }
}

/// Check every block of one document, in order; the failures, each located.
fn check_document(path: &Path) -> (usize, Vec<String>) {
    let name = path
        .strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string();
    let text = std::fs::read_to_string(path).expect("readable document");
    let blocks = match blocks(&name, &text) {
        Ok(b) => b,
        Err(e) => return (0, vec![e]),
    };
    let mut session = Session::new();
    let mut checked = 0;
    let mut failures = Vec::new();
    for block in &blocks {
        match check_block(block, &mut session) {
            Ok(true) => checked += 1,
            Ok(false) => {}
            Err(e) => failures.push(format!("{}: {e}", block.at())),
        }
    }
    eprintln!(
        "{name}: {checked} checked block(s), {} failing",
        failures.len()
    );
    (checked, failures)
}

#[test]
fn every_checked_example_in_the_readme_and_docs_works() {
    let docs = documents();
    let results: Vec<(usize, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = docs
            .iter()
            .map(|d| s.spawn(move || check_document(d)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a document's check panicked"))
            .collect()
    });
    let checked: usize = results.iter().map(|r| r.0).sum();
    let failures: Vec<String> = results.into_iter().flat_map(|r| r.1).collect();
    assert!(
        failures.is_empty(),
        "{} example(s) in the docs fail:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    // A parser that found nothing would pass everything: the docs hold dozens.
    assert!(checked >= 20, "only {checked} checked blocks found");
}

#[test]
fn the_readme_keeps_the_two_commands() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let blocks = blocks("README.md", &readme).expect("README parses");
    let sh: String = blocks
        .iter()
        .filter(|b| b.lang == "sh")
        .map(|b| b.text.as_str())
        .collect();
    for command in [
        "cargo run --release -- serve",
        "cargo test --release --locked",
    ] {
        assert!(sh.contains(command), "README lost `{command}`");
    }
}

// ---------------------------------------------------------------------------------
// The checker itself: each kind of mistake must fail.

fn sh_fails(text: &str, run: bool) -> String {
    let mut session = Session::new();
    check_sh(text, run, &mut session).expect_err("this example must fail")
}

#[test]
fn a_wrong_flag_value_or_subcommand_fails() {
    let err = sh_fails("driftwarden serve --tial /var/log/usage.jsonl &\n", false);
    assert!(err.contains("--tial"), "{err}");
    let err = sh_fails(
        "driftwarden recalibrate --kind deployment --scope route=chat",
        false,
    );
    assert!(err.contains("deployment"), "{err}");
    let err = sh_fails("cargo run --release -- serv", false);
    assert!(err.contains("serv"), "{err}");
    sh_fails("cargo bench --bench no_such_bench", false);
    sh_fails("cargo test --release", false);
}

#[test]
fn a_runnable_command_that_fails_fails() {
    let err = sh_fails(
        "./target/release/driftwarden replay --events missing.jsonl",
        true,
    );
    assert!(err.contains("exited with"), "{err}");
    // The same command in a no-run block is only parsed.
    let mut session = Session::new();
    check_sh(
        "./target/release/driftwarden replay --events missing.jsonl",
        false,
        &mut session,
    )
    .expect("parsed only");
}

#[test]
fn a_wrong_key_in_any_toml_file_fails() {
    let err = check_toml("[analysis]\nbucket_minute = 10\n", TomlKind::Config).unwrap_err();
    assert!(err.contains("bucket_minute"), "{err}");
    let err = check_toml(
        "[[rule]]\nname = \"x\"\nsignal = \"eror_rate\"\n",
        TomlKind::Rules,
    )
    .unwrap_err();
    assert!(err.contains("eror_rate"), "{err}");
    check_toml("[[tier]]\nname = \"only\"\nchanels = []\n", TomlKind::Tiers).unwrap_err();
    check_toml("[[price]]\nmodel = \"m\"\n", TomlKind::Pricing).unwrap_err();
    // A channel's variable gets a placeholder, so the example is judged on its keys.
    check_toml(
        "[[channel]]\nname = \"oncall\"\ntype = \"slack\"\nwebhook_url_env = \"SLACK_X\"\n",
        TomlKind::Config,
    )
    .expect("a valid channel passes");
}

#[test]
fn shell_words_split_like_a_shell() {
    let cmds = split_commands(
        "export T=abc # comment\ncurl -d '\n{\"a\": 1}' x \\\n  --y \"$T\"/z ${T} $(openssl rand) &\n",
    )
    .unwrap();
    let env = BTreeMap::from([("T".to_string(), "abc".to_string())]);
    let words: Vec<Vec<String>> = cmds
        .iter()
        .map(|c| c.iter().map(|w| expand(w, &env)).collect())
        .collect();
    assert_eq!(words[0], ["export", "T=abc"]);
    assert_eq!(
        words[1],
        [
            "curl",
            "-d",
            "\n{\"a\": 1}",
            "x",
            "--y",
            "abc/z",
            "abc",
            PLACEHOLDER
        ]
    );
    assert_eq!(words.len(), 2);
    assert!(split_commands("a | b").is_err());
}

#[test]
fn fences_are_found_with_their_attributes() {
    let text = "x\n```sh,no-run\na\n```\n- item\n\n  ```toml\n  k = 1\n  ```\n~~~\nb\n~~~\n";
    let b = blocks("t.md", text).unwrap();
    assert_eq!(b.len(), 3);
    assert_eq!(
        (b[0].lang.as_str(), b[0].attrs.clone()),
        ("sh", vec!["no-run".to_string()])
    );
    assert_eq!((b[1].line, b[1].text.as_str()), (7, "k = 1\n"));
    assert_eq!(b[2].lang, "");
    assert!(blocks("t.md", "```sh\nopen\n").is_err());
    let mut session = Session::new();
    let odd = Block {
        attrs: vec!["no_run".into()],
        ..b[0].clone()
    };
    assert!(
        check_block(&odd, &mut session).is_err(),
        "a misspelt attribute fails"
    );
}
