//! The code's shape, checked like any other behaviour: no daemon crate depends on
//! another, contracts never depend on daemons, no two modules of a crate import each
//! other (directly or round a loop), and no file is over 500 lines of non-test code
//! unless its first lines say why.
//!
//! Module imports are read from the source: `use crate::..`, `use super::..` (with
//! `{..}` groups) and inline `crate::a::b` paths. An edge is drawn between the two
//! sibling modules under the deepest module both paths share, so `vms::start` using
//! `migration::peer` is `vms -> migration` at the crate's top level; a module using
//! its own parent's items is no edge. Test code (`tests.rs` files and everything
//! after `#[cfg(test)]`) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use nova_tests::root;

/// Workspace crates: (package name, directory).
fn crates() -> Vec<(String, PathBuf)> {
    let ws = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let members = ws
        .split("members = [")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .expect("workspace members");
    members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
        .map(|m| {
            let dir = root().join(m);
            let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
            let name = toml
                .lines()
                .find_map(|l| l.strip_prefix("name = "))
                .map(|n| n.trim_matches('"').to_string())
                .unwrap();
            (name, dir)
        })
        .collect()
}

/// The workspace crates `dir/Cargo.toml` depends on (normal dependencies only).
fn path_deps(dir: &Path) -> Vec<String> {
    let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let mut section = String::new();
    let mut deps = Vec::new();
    for line in toml.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            section = l.to_string();
            continue;
        }
        if section == "[dependencies]" && l.contains("path =") {
            deps.push(l.split(['=', ' ', '.']).next().unwrap().to_string());
        }
    }
    deps
}

const DAEMONS: [&str; 3] = ["nova-vmm", "nova-hostd", "nova-controller"];

#[test]
fn no_daemon_depends_on_another_and_contracts_depend_on_no_daemon() {
    let mut problems = Vec::new();
    for (name, dir) in crates() {
        for dep in path_deps(&dir) {
            let daemon_dep = DAEMONS.contains(&dep.as_str());
            if daemon_dep && (DAEMONS.contains(&name.as_str()) || name.ends_with("-api")) {
                problems.push(format!("{name} depends on the daemon crate {dep}"));
            }
            if name == "nova-http" && dep != "nova-http" {
                problems.push(format!("nova-http depends on {dep}"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// A source file's module path under its crate root (`src/vms/start.rs` -> `vms::start`).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    if parts.first().is_some_and(|p| p == "bin") {
        return vec![];
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The file's code before its tests.
fn non_test(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

/// Expands a use tree (`a::{b, c::d}`) into paths.
fn expand(tree: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut p = prefix.to_vec();
        p.extend(head);
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], &p, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], &p, out);
    } else {
        let mut p = prefix.to_vec();
        let t = tree.split(" as ").next().unwrap_or("");
        p.extend(
            t.split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty() && *s != "self" && *s != "*")
                .map(String::from),
        );
        out.push(p);
    }
}

/// Absolute module paths a file's code refers to.
fn references(code: &str, here: &[String], is_mod_file: bool) -> Vec<Vec<String>> {
    // `super::` in `a/b.rs` (module a::b) is module `a`; in `a/b/mod.rs` too.
    let parent = |levels: usize| -> Vec<String> {
        let _ = is_mod_file;
        here[..here.len().saturating_sub(levels)].to_vec()
    };
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let after = &rest[i + 4..];
        let end = after.find(';').unwrap_or(after.len());
        let tree = &after[..end];
        let boundary_ok = i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        if boundary_ok {
            let t = tree.trim();
            let mut supers = 0;
            let mut t2 = t;
            while let Some(r) = t2.strip_prefix("super::") {
                supers += 1;
                t2 = r;
            }
            if let Some(r) = t.strip_prefix("crate::") {
                expand(r, &[], &mut out);
            } else if supers > 0 {
                expand(t2, &parent(supers), &mut out);
            } else if let Some(r) = t.strip_prefix("self::") {
                expand(r, here, &mut out);
            }
        }
        rest = &after[end..];
    }
    // Inline paths: crate::a::b(...)
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(i) = code[from..].find("crate::") {
        let at = from + i;
        from = at + 7;
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        let path: Vec<String> = code[from..]
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .next()
            .unwrap_or("")
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if !path.is_empty() {
            out.push(path);
        }
    }
    out
}

/// Cycles among `nodes` (each a list of nodes on the cycle).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's strongly connected components; a component of 2+ nodes is a loop.
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<String, usize>,
        low: BTreeMap<String, usize>,
        stack: Vec<String>,
        on: BTreeSet<String>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit(t: &mut T, v: &str) {
        t.index.insert(v.into(), t.next);
        t.low.insert(v.into(), t.next);
        t.next += 1;
        t.stack.push(v.into());
        t.on.insert(v.into());
        for w in t.edges.get(v).cloned().unwrap_or_default() {
            if !t.index.contains_key(&w) {
                visit(t, &w);
                let lw = t.low[&w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(&w) {
                let iw = t.index[&w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(&w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// One module graph: edges between sibling modules, and for each edge a file that
/// draws it.
#[derive(Default)]
struct Graph {
    edges: BTreeMap<String, BTreeSet<String>>,
    because: BTreeMap<(String, String), String>,
}

/// Every crate's module import graph, keyed by the siblings' parent (`crate` for
/// the top level).
fn module_graphs() -> BTreeMap<String, Graph> {
    let mut graphs: BTreeMap<String, Graph> = BTreeMap::new();
    for (name, dir) in crates() {
        let src = dir.join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_path(&src, f)).collect();
        let is_module = |p: &[String]| modules.contains(p);
        for f in &files {
            if f.file_name().is_some_and(|n| n == "tests.rs")
                || f.strip_prefix(&src).unwrap().starts_with("bin")
            {
                continue;
            }
            let here = module_path(&src, f);
            let text = std::fs::read_to_string(f).unwrap();
            let is_mod = f.file_name().is_some_and(|n| n == "mod.rs");
            for target in references(non_test(&text), &here, is_mod) {
                let common = here.iter().zip(&target).take_while(|(a, b)| a == b).count();
                if common >= here.len() || common >= target.len() {
                    continue; // into itself, its parent's items, or its own children
                }
                let from = &here[common];
                let to = &target[common];
                if !is_module(&target[..=common]) {
                    continue; // an item of the common parent, not a sibling module
                }
                let parent = if common == 0 {
                    format!("{name}::crate")
                } else {
                    format!("{name}::{}", here[..common].join("::"))
                };
                let g = graphs.entry(parent).or_default();
                g.edges.entry(from.clone()).or_default().insert(to.clone());
                g.because
                    .entry((from.clone(), to.clone()))
                    .or_insert_with(|| {
                        format!(
                            "{} uses {}",
                            f.strip_prefix(root()).unwrap().display(),
                            target.join("::")
                        )
                    });
            }
        }
    }
    graphs
}

#[test]
fn no_two_modules_of_a_crate_import_each_other() {
    let mut loops = Vec::new();
    for (parent, g) in module_graphs() {
        for c in cycles(&g.edges) {
            loops.push(format!("{parent}: {}", c.join(" <-> ")));
            for ((a, b), why) in &g.because {
                if c.contains(a) && c.contains(b) {
                    loops.push(format!("    {a} -> {b}: {why}"));
                }
            }
        }
    }
    assert!(
        loops.is_empty(),
        "module import cycles (modules that import each other, directly or round a loop):\n{}",
        loops.join("\n")
    );
}

#[test]
fn the_cycle_finder_finds_loops_and_only_loops() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let edge = |g: &mut BTreeMap<String, BTreeSet<String>>, a: &str, b: &str| {
        g.entry(a.into()).or_default().insert(b.into());
    };
    edge(&mut g, "api", "vms");
    edge(&mut g, "vms", "images");
    edge(&mut g, "migration", "vms");
    assert!(cycles(&g).is_empty());
    edge(&mut g, "vms", "migration");
    assert_eq!(
        cycles(&g),
        vec![vec!["migration".to_string(), "vms".into()]]
    );
    let mut refs = references(
        "use crate::{api::{A, B}, vms};\nuse super::peer::X;\nfn f() { crate::images::get(); }",
        &["migration".into(), "outgoing".into()],
        false,
    );
    refs.sort();
    assert_eq!(
        refs,
        [
            vec!["api", "A"],
            vec!["api", "B"],
            vec!["images", "get"],
            vec!["migration", "peer", "X"],
            vec!["vms"],
        ]
        .map(|v| v.into_iter().map(String::from).collect::<Vec<_>>())
    );
}

/// The marker a long file's first lines carry to say why it is long.
const LONG_FILE_REASON: &str = "over 500 lines";

#[test]
fn no_file_is_over_500_lines_of_code_without_saying_why() {
    let mut long = Vec::new();
    for (_, dir) in crates() {
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for f in files {
            if f.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            let code = non_test(&text).lines().count();
            let head: String = text.lines().take(12).collect::<Vec<_>>().join("\n");
            if code > 500 && !head.contains(LONG_FILE_REASON) {
                long.push(format!(
                    "{} ({code} lines)",
                    f.strip_prefix(root()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "files over 500 lines of non-test code whose first lines do not say why \
         (\"{LONG_FILE_REASON}\"): {long:#?}"
    );
}
