//! The module map in `src/lib.rs` against the code: every `crate::` path under `src/` is an
//! edge from the top-level module of its file to the module it names, and the set of those
//! edges must be exactly the map's, with no circle. So the map cannot drift from the code, and
//! a dependency pointing back up (say `store` naming `snapshot`) fails here, not in review.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The library's top-level modules: `src/x.rs` and `src/x/`, without the crate roots.
fn modules() -> BTreeSet<String> {
    fs::read_dir(src())
        .expect("list src/")
        .map(|e| e.expect("a dir entry").path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            match name.strip_suffix(".rs") {
                Some(stem) => Some(stem.to_string()),
                None => p.is_dir().then_some(name),
            }
        })
        .filter(|m| m != "lib" && m != "main")
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("list a source dir") {
        let path = entry.expect("a dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The identifier at the start of `s`.
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of each item `crate::` names in `text`: `crate::a::b` names `a`,
/// `crate::{a, b::c}` names `a` and `b`.
fn named(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // `twinkv_crate::` or similar: not this crate's root
        }
        let rest = &text[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                out.extend(group.split(',').map(|item| ident(item.trim())));
            }
            None => out.push(ident(rest)),
        }
    }
    out
}

/// The edges the code has between top-level modules.
fn code_graph(modules: &BTreeSet<String>) -> Graph {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph = Graph::new();
    for file in files {
        let rel = file.strip_prefix(src()).expect("under src/");
        let first = rel.components().next().expect("a path under src/");
        let first = first.as_os_str().to_str().expect("a UTF-8 file name");
        let from = first.strip_suffix(".rs").unwrap_or(first);
        if !modules.contains(from) {
            continue; // lib.rs (the root) and main.rs (the binary, which cannot say `crate::`)
        }
        let text = fs::read_to_string(&file).expect("read a source file");
        for to in named(&text) {
            if to != from && modules.contains(to) {
                graph
                    .entry(from.to_string())
                    .or_default()
                    .insert(to.to_string());
            }
        }
    }
    graph
}

/// The map's edges: the `text` block after `# Module map` in `src/lib.rs`. Entries are
/// `a, b ─▶ c, d`, one per line or separated by `;`, with `(comments)` anywhere; a line with no
/// arrow continues the entry above it.
fn documented_graph() -> Graph {
    let lib = fs::read_to_string(src().join("lib.rs")).expect("read src/lib.rs");
    let lines: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .skip_while(|l| l.trim() != "# Module map")
        .skip_while(|l| l.trim() != "```text")
        .skip(1)
        .take_while(|l| l.trim() != "```")
        .collect();
    assert!(!lines.is_empty(), "src/lib.rs has no module map block");
    let mut entries: Vec<String> = Vec::new();
    for line in lines {
        for (i, part) in line.split(';').enumerate() {
            match entries.last_mut() {
                Some(last) if i == 0 && !part.contains('─') => last.push_str(part),
                _ => entries.push(part.to_string()),
            }
        }
    }
    let mut graph = Graph::new();
    for entry in entries {
        let mut plain = String::new();
        let mut depth = 0;
        for c in entry.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 => plain.push(c),
                _ => {}
            }
        }
        let (from, to) = plain
            .split_once("─▶")
            .unwrap_or_else(|| panic!("a module map entry without an arrow: {entry:?}"));
        let to: BTreeSet<String> = to
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(String::from)
            .collect();
        for from in from.split(',').map(str::trim) {
            graph
                .entry(from.to_string())
                .or_default()
                .extend(to.clone());
        }
    }
    graph.remove("main"); // the binary: what it uses is the library's public surface
    graph.retain(|_, to| !to.is_empty());
    graph
}

/// A circle in `graph`, if it has one, as the modules along it.
fn circle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut found = path[at..].to_vec();
            found.push(m.to_string());
            return Some(found);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_module_map_in_lib_rs_is_the_code_s_import_graph() {
    let modules = modules();
    let code = code_graph(&modules);
    let map = documented_graph();
    for (from, to) in &map {
        assert!(
            modules.contains(from),
            "the map names {from:?}, not a module"
        );
        for m in to {
            assert!(modules.contains(m), "the map names {m:?}, not a module");
        }
    }
    let edges = |g: &Graph| -> BTreeSet<(String, String)> {
        g.iter()
            .flat_map(|(f, to)| to.iter().map(move |t| (f.clone(), t.clone())))
            .collect()
    };
    let (code_edges, map_edges) = (edges(&code), edges(&map));
    let unmapped: Vec<_> = code_edges.difference(&map_edges).collect();
    let unused: Vec<_> = map_edges.difference(&code_edges).collect();
    assert!(
        unmapped.is_empty() && unused.is_empty(),
        "src/lib.rs's module map and the code disagree: in the code only {unmapped:?}; \
         in the map only {unused:?}"
    );
}

#[test]
fn the_import_graph_has_no_circle_and_its_leaves_name_nothing() {
    let code = code_graph(&modules());
    assert_eq!(circle(&code), None, "a circle in the import graph");
    for leaf in ["store", "metrics", "defaults"] {
        assert_eq!(
            code.get(leaf),
            None,
            "{leaf} names another module of the crate"
        );
    }
}

#[test]
fn the_checks_see_what_they_are_meant_to() {
    assert_eq!(
        named("use crate::store::{Entry, Op};\nlet x = crate::{log, snapshot::format};"),
        ["store", "log", "snapshot"]
    );
    assert_eq!(named("my_crate::x; crate::a"), ["a"]);
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    assert_eq!(circle(&g), None);
    g.entry("b".into()).or_default().insert("a".into());
    assert_eq!(
        circle(&g),
        Some(vec!["a".to_string(), "b".to_string(), "a".to_string()])
    );
}
