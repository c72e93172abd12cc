//! Layering, in the spirit of rust-analyzer's tidy tests: the top-level modules of
//! `src/` (`src/x.rs` or `src/x/`) import one another without a cycle, and each only
//! from the layers below its own, in the order of the table under "## Layers" in
//! ARCHITECTURE.md. The test reads that table, so the document and the code cannot
//! drift apart.
//!
//! It reads source text; no compiler is involved. A dependency is a path that leaves
//! its top-level module: `use crate::x::...`, a `crate::x::...` path anywhere in code
//! (macro arguments included), each item of a `crate::{x, y::z}` group, a `super::`
//! chain that climbs to the crate root (`super::x` in `src/a/mod.rs`), and a string
//! that is such a path (serde's `with = "crate::x::y"`). Comments and other strings
//! are skipped. Test modules (`#[cfg(test)]`) count like any code: a helper that a
//! lower layer's tests need belongs in that layer. `lib.rs` (the module list) and
//! `main.rs` (the binary, a crate of its own) are roots, not layers. A re-export
//! counts where it is written: `pub use crate::domain::Message` in `notify` is
//! `notify -> domain`, and a caller importing `notify::Message` depends on `notify`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

/// Where an import was written.
#[derive(Debug, Clone)]
struct Site {
    file: String,
    line: usize,
}

/// From a top-level module, to each module it imports, with where.
type Graph = BTreeMap<String, BTreeMap<String, Vec<Site>>>;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    Open,
    Close,
    Comma,
    Other,
}

/// The tokens of a Rust source that matter for paths, each with its line; comments,
/// literals and lifetimes are dropped (a string that is a whole `crate::`/`super::`
/// path is kept as its tokens).
fn tokens(src: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Skips a quoted literal from its opening quote at `i`; returns its content.
    let quoted = |i: &mut usize, line: &mut usize, hashes: Option<usize>| -> String {
        let start = *i + 1;
        *i += 1;
        loop {
            let ch = at(*i);
            if ch == '\0' {
                return String::new();
            }
            if ch == '\n' {
                *line += 1;
            }
            match hashes {
                None if ch == '\\' => *i += 1,
                None if ch == '"' => break,
                Some(h) if ch == '"' && (1..=h).all(|k| at(*i + k) == '#') => break,
                _ => {}
            }
            *i += 1;
        }
        let content: String = c[start..*i].iter().collect();
        *i += 1 + hashes.unwrap_or(0);
        content
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if at(i) == '\0' {
                    break;
                } else if at(i) == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if at(i) == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if at(i) == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            let first = line;
            let content = quoted(&mut i, &mut line, None);
            let is_path = content.chars().all(|ch| is_ident(ch) || ch == ':');
            if is_path && (content.starts_with("crate::") || content.starts_with("super::")) {
                out.extend(tokens(&content).into_iter().map(|(t, _)| (t, first)));
            }
        } else if ch == '\'' {
            if at(i + 1) == '\\' {
                // The quote, the backslash and the escaped character, then up to the
                // closing quote (`'\u{..}'`).
                i += 3;
                while at(i) != '\'' && at(i) != '\0' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                // A lifetime or a label: its name is read as an identifier next.
                i += 1;
            }
        } else if is_ident(ch) && !ch.is_ascii_digit() {
            let start = i;
            while is_ident(at(i)) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let prefix = matches!(word.as_str(), "b" | "c" | "r" | "br" | "cr");
            if prefix && at(i) == '\'' && word == "b" {
                // A byte literal: the quote is handled on the next turn.
            } else if prefix && word.ends_with('r') && (at(i) == '"' || at(i) == '#') {
                let hashes = (0..).take_while(|k| at(i + k) == '#').count();
                if at(i + hashes) == '"' {
                    i += hashes;
                    quoted(&mut i, &mut line, Some(hashes));
                } else if word == "r" && hashes == 1 {
                    // A raw identifier, `r#type`.
                    i += 1;
                    let start = i;
                    while is_ident(at(i)) {
                        i += 1;
                    }
                    out.push((Tok::Ident(c[start..i].iter().collect()), line));
                }
            } else if prefix && at(i) == '"' {
                quoted(&mut i, &mut line, None);
            } else {
                out.push((Tok::Ident(word), line));
            }
        } else if ch.is_ascii_digit() {
            while is_ident(at(i)) || (at(i) == '.' && at(i + 1).is_ascii_digit()) {
                i += 1;
            }
        } else {
            let tok = match ch {
                ':' if at(i + 1) == ':' => {
                    i += 1;
                    Tok::Path
                }
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                _ => Tok::Other,
            };
            out.push((tok, line));
            i += 1;
        }
    }
    out
}

/// The first segment of each path that starts at the crate root at token `j`: one
/// identifier, or each item of a `{...}` group.
fn root_items(toks: &[(Tok, usize)], j: usize) -> Vec<(String, usize)> {
    match toks.get(j) {
        Some((Tok::Ident(name), line)) => vec![(name.clone(), *line)],
        Some((Tok::Open, _)) => {
            let mut items = Vec::new();
            let mut depth = 0;
            let mut item_start = false;
            for (tok, line) in &toks[j..] {
                match tok {
                    Tok::Open => {
                        depth += 1;
                        item_start = depth == 1;
                        continue;
                    }
                    Tok::Close => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Tok::Comma if depth == 1 => {
                        item_start = true;
                        continue;
                    }
                    Tok::Ident(name) if depth == 1 && item_start => {
                        items.push((name.clone(), *line))
                    }
                    _ => {}
                }
                item_start = false;
            }
            items
        }
        _ => Vec::new(),
    }
}

/// The top-level modules a file imports from, with lines. `module` is the file's
/// module path (`["store", "outbox"]` for `src/store/outbox.rs`).
fn imports(module: &[String], src: &str) -> Vec<(String, usize)> {
    let toks = tokens(src);
    let tok = |i: usize| toks.get(i).map(|(t, _)| t);
    let mut found = Vec::new();
    let mut depth = 0;
    // Inline modules (`mod tests { ... }`), each with the brace depth of its body.
    let mut inline: Vec<usize> = Vec::new();
    for i in 0..toks.len() {
        let after_path = i > 0 && tok(i - 1) == Some(&Tok::Path);
        match &toks[i].0 {
            Tok::Open => depth += 1,
            Tok::Close => {
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
                depth -= 1;
            }
            Tok::Ident(w) if w == "mod" => {
                if let (Some(Tok::Ident(_)), Some(Tok::Open)) = (tok(i + 1), tok(i + 2)) {
                    inline.push(depth + 1);
                }
            }
            Tok::Ident(w) if w == "crate" && !after_path && tok(i + 1) == Some(&Tok::Path) => {
                found.extend(root_items(&toks, i + 2));
            }
            Tok::Ident(w) if w == "super" && !after_path => {
                let mut j = i;
                let mut up = 0;
                while tok(j) == Some(&Tok::Ident("super".into())) && tok(j + 1) == Some(&Tok::Path)
                {
                    up += 1;
                    j += 2;
                }
                // Climbing to the crate root leaves the module; anything less stays
                // inside its top-level module.
                if up == module.len() + inline.len() {
                    found.extend(root_items(&toks, j));
                }
            }
            _ => {}
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The top-level modules of `src/` and the graph of their imports.
fn graph() -> (BTreeSet<String>, Graph) {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut modules = BTreeSet::new();
    let mut parsed = Vec::new();
    for path in files {
        let rel = path.strip_prefix(&src).unwrap();
        let mut module: Vec<String> = rel
            .iter()
            .map(|p| p.to_str().unwrap().trim_end_matches(".rs").to_string())
            .collect();
        if module.last().is_some_and(|m| m == "mod") {
            module.pop();
        }
        if module == ["lib"] || module == ["main"] {
            continue;
        }
        modules.insert(module[0].clone());
        let text = fs::read_to_string(&path).unwrap();
        parsed.push((format!("src/{}", rel.display()), module, text));
    }
    let mut graph = Graph::new();
    for (file, module, text) in parsed {
        for (target, line) in imports(&module, &text) {
            if target == module[0] || target == "self" {
                continue;
            }
            assert!(
                modules.contains(&target),
                "{file}:{line}: `crate::{target}` is not a top-level module of src/"
            );
            graph
                .entry(module[0].clone())
                .or_default()
                .entry(target)
                .or_default()
                .push(Site {
                    file: file.clone(),
                    line,
                });
        }
    }
    (modules, graph)
}

fn sites(graph: &Graph, from: &str, to: &str) -> String {
    let sites = &graph[from][to];
    let shown: Vec<String> = sites
        .iter()
        .take(3)
        .map(|s| format!("{}:{}", s.file, s.line))
        .collect();
    let more = match sites.len() {
        n if n > 3 => format!(" and {} more", n - 3),
        _ => String::new(),
    };
    format!("{}{more}", shown.join(", "))
}

/// One shortest cycle through `start` within `component`, as its modules in order.
fn cycle_through(graph: &Graph, component: &BTreeSet<String>, start: &str) -> Vec<String> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
            if !component.contains(next) {
                continue;
            }
            if next == start {
                let mut path = vec![node.to_string()];
                let mut at = node;
                while at != start {
                    at = parent[at];
                    path.push(at.to_string());
                }
                path.reverse();
                return path;
            }
            if !parent.contains_key(next.as_str()) {
                parent.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    unreachable!("{start} is in a strongly connected component")
}

fn reachable(graph: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(node) = stack.pop() {
        for next in graph.get(&node).into_iter().flat_map(|m| m.keys()) {
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    seen
}

/// The modules caught in cycles, per strongly connected component, each with one
/// shortest cycle through its first module.
fn cycles(modules: &BTreeSet<String>, graph: &Graph) -> Vec<(BTreeSet<String>, Vec<String>)> {
    let reach: BTreeMap<&String, BTreeSet<String>> =
        modules.iter().map(|m| (m, reachable(graph, m))).collect();
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for m in modules {
        if done.contains(m) || !reach[m].contains(m) {
            continue;
        }
        let component: BTreeSet<String> = reach[m]
            .iter()
            .filter(|o| reach[*o].contains(m))
            .cloned()
            .collect();
        let cycle = cycle_through(graph, &component, m);
        done.extend(component.iter().cloned());
        found.push((component, cycle));
    }
    found
}

/// The layer table of ARCHITECTURE.md: module to layer (0 is the lowest).
fn layer_table() -> BTreeMap<String, usize> {
    let doc = fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let section = doc
        .split("\n## Layers\n")
        .nth(1)
        .expect("ARCHITECTURE.md has a `## Layers` section");
    let rows = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2); // the header and its separator
    let mut layers = BTreeMap::new();
    for (expected, row) in rows.enumerate() {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let layer: usize = cells[1].parse().unwrap_or_else(|_| {
            panic!("ARCHITECTURE.md, layer table: {row:?} has no layer number")
        });
        assert_eq!(
            layer, expected,
            "ARCHITECTURE.md, layer table: layers are numbered 0, 1, 2, ... in order"
        );
        for name in cells[2].split('`').skip(1).step_by(2) {
            let before = layers.insert(name.to_string(), layer);
            assert!(
                before.is_none(),
                "ARCHITECTURE.md, layer table: `{name}` is listed twice"
            );
        }
    }
    assert!(
        !layers.is_empty(),
        "ARCHITECTURE.md: the `## Layers` section has no table"
    );
    layers
}

#[test]
fn top_level_modules_form_no_cycle() {
    let (modules, graph) = graph();
    let found = cycles(&modules, &graph);
    let report: Vec<String> = found
        .iter()
        .map(|(component, cycle)| {
            let mut text = format!("cycle: {} -> {}", cycle.join(" -> "), cycle[0]);
            if component.len() > cycle.len() {
                let all: Vec<&str> = component.iter().map(String::as_str).collect();
                text += &format!(" (one of the cycles among {})", all.join(", "));
            }
            for (k, from) in cycle.iter().enumerate() {
                let to = &cycle[(k + 1) % cycle.len()];
                text += &format!("\n    {from} -> {to}: {}", sites(&graph, from, to));
            }
            text
        })
        .collect();
    assert!(
        report.is_empty(),
        "import cycles between top-level modules of src/:\n{}",
        report.join("\n")
    );
}

#[test]
fn imports_only_go_down_the_layer_table() {
    let (modules, graph) = graph();
    let layers = layer_table();
    let mut problems = Vec::new();
    for m in &modules {
        if !layers.contains_key(m) {
            problems.push(format!("`{m}` (src/) is missing from the layer table"));
        }
    }
    for m in layers.keys() {
        if !modules.contains(m) {
            problems.push(format!(
                "`{m}` is in the layer table but not a module of src/"
            ));
        }
    }
    for (from, targets) in &graph {
        for to in targets.keys() {
            let (Some(&a), Some(&b)) = (layers.get(from), layers.get(to)) else {
                continue;
            };
            let why = match b.cmp(&a) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => "its own layer, whose modules are independent",
                std::cmp::Ordering::Greater => "a higher layer",
            };
            problems.push(format!(
                "`{from}` (layer {a}) imports `{to}` (layer {b}), {why}: {}",
                sites(&graph, from, to)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "imports against the layer table of ARCHITECTURE.md (move the shared type down, \
         or change the table if the design changed):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scanner_reads_paths_not_text() {
    let src = r##"
        use crate::domain::{Alert, Scope};
        use crate::{store::{self, Store}, lanes};
        // use crate::comment;
        /* crate::block /* nested crate::deeper */ */
        const S: &str = "not crate::quoted, text";
        const R: &str = r#"crate::raw " still raw"#;
        const C: char = '"';
        fn f<'a>(x: &'a str) -> i64 { crate::clock::now_ms() }
        #[serde(with = "crate::pricing::form")]
        struct W;
        mod tests {
            use super::super::sim;
            use super::*;
        }
        use super::baselines;
    "##;
    // As `src/adapters/mod.rs`, where one `super::` is already the crate root.
    let found = imports(&["adapters".to_string()], src);
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "domain",
            "store",
            "lanes",
            "clock",
            "pricing",
            "sim",
            "baselines"
        ]
    );
    assert_eq!(
        found[3].1, 9,
        "lines are counted past comments and literals"
    );
    // In `src/adapters/mapped.rs`, `super::` is `adapters`.
    let module = ["adapters".to_string(), "mapped".to_string()];
    assert_eq!(imports(&module, "use super::identity::Salt;"), []);
    assert_eq!(
        imports(&module, "use super::super::identity::Salt;"),
        [("identity".to_string(), 1)]
    );
}
