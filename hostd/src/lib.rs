//! nova-hostd: the per-host daemon. It owns what is host-local: one `nova-vmm` process
//! per VM and its directory under the data dir ([`vms`]), the image cache and VM disks
//! ([`images`]), the host's bridge, taps and VXLAN overlay ([`net`]), resource
//! accounting ([`admission`]), and the host side of live migration ([`migration`]).
//! [`host`] wires them together; [`api`] serves them over HTTP (the wire types are
//! the contract crate `nova-hostd-api`'s; hostd reaches VMMs with `nova-vmm-api`'s
//! client, other hosts with `HostdClient`, the controller with [`controller`]);
//! [`config`] is its flags and config file. It does not decide where VMs run: the
//! controller does.

pub mod admission;
pub mod api;
pub mod config;
pub mod controller;
pub mod error;
pub mod host;
pub mod images;
pub mod metrics;
pub mod migration;
pub mod net;
pub mod vms;

/// No import cycles between the crate's modules: every `crate::`/`super::` path in
/// non-test code is resolved to the module that defines it, and the graph of those
/// edges must have no cycle (a parent naming its children does not count).
#[cfg(test)]
mod module_graph {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                let mut sub = prefix.to_vec();
                sub.push(name);
                modules(&p, &sub, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut m = prefix.to_vec();
                if !matches!(stem, "lib" | "main" | "mod") {
                    m.push(stem.to_string());
                }
                let text = std::fs::read_to_string(&p).unwrap();
                // Production code only: test modules may reach anywhere.
                let code = text.split("#[cfg(test)]").next().unwrap_or("");
                let code: String = code
                    .lines()
                    .map(|l| l.split("//").next().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("\n");
                out.insert(m.join("::"), code);
            }
        }
    }

    /// The module `path` (words after `crate`, or relative to `here`) lives in.
    fn resolve(mods: &BTreeMap<String, String>, here: &str, path: &[&str]) -> Option<String> {
        let mut parts: Vec<&str> = Vec::new();
        let mut rest = path;
        match rest.first() {
            Some(&"crate") => rest = &rest[1..],
            Some(&"super") | Some(&"self") => {
                parts = here.split("::").filter(|s| !s.is_empty()).collect();
                while let Some(&w) = rest.first() {
                    match w {
                        "super" => {
                            parts.pop();
                        }
                        "self" => {}
                        _ => break,
                    }
                    rest = &rest[1..];
                }
            }
            _ => return None,
        }
        parts.extend(rest);
        (0..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|m| mods.contains_key(m))
    }

    fn edges(mods: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
        let word = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
        let mut g = BTreeMap::new();
        for (m, code) in mods {
            let mut to = BTreeSet::new();
            let mut add = |path: &str| {
                let words: Vec<&str> = path.split("::").filter(|w| !w.is_empty()).collect();
                if let Some(t) = resolve(mods, m, &words) {
                    let parent_of_m = m.starts_with(&format!("{t}::")) || t.is_empty();
                    if &t != m && !parent_of_m {
                        to.insert(t);
                    }
                }
            };
            for (i, _) in code.match_indices(['c', 's']) {
                let before = code[..i].chars().next_back();
                if before.is_some_and(word) {
                    continue;
                }
                let tail = &code[i..];
                if !(tail.starts_with("crate::") || tail.starts_with("super::")) {
                    continue;
                }
                let path: String = tail.chars().take_while(|&c| word(c)).collect();
                let path = path.trim_end_matches(':');
                add(path);
                // `use crate::a::{b, c::d}`: each item of the group.
                if let Some(group) = tail[path.len()..].strip_prefix("::{") {
                    for item in group.split('}').next().unwrap_or("").split(',') {
                        let item = item.split(" as ").next().unwrap_or("").trim();
                        if !item.is_empty() && item != "self" {
                            add(&format!("{path}::{item}"));
                        }
                    }
                }
            }
            g.insert(m.clone(), to);
        }
        g
    }

    /// A cycle through `v`, if one is reachable from it.
    fn cycle(
        g: &BTreeMap<String, BTreeSet<String>>,
        v: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == v) {
            return Some(stack[i..].to_vec());
        }
        if !done.insert(v.to_string()) {
            return None;
        }
        stack.push(v.to_string());
        for w in &g[v] {
            if let Some(c) = cycle(g, w, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }

    #[test]
    fn no_module_imports_one_that_imports_it_back() {
        let mut mods = BTreeMap::new();
        modules(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &[],
            &mut mods,
        );
        let g = edges(&mods);
        assert!(g["migration::state"].contains("vms::record"), "{g:?}");
        assert!(g["api::vms"].contains("host"), "{g:?}");
        let mut done = BTreeSet::new();
        for m in g.keys() {
            if let Some(c) = cycle(&g, m, &mut Vec::new(), &mut done) {
                panic!("import cycle: {}", c.join(" -> "));
            }
        }
    }

    #[test]
    fn the_checker_sees_a_cycle() {
        let mods: BTreeMap<String, String> = [
            ("a".into(), "use crate::b::X;".into()),
            ("b".into(), "fn f() { super::a::g() }".into()),
            ("c".into(), "use crate::{a, b::Y};".into()),
        ]
        .into_iter()
        .collect();
        let g = edges(&mods);
        assert_eq!(g["c"].len(), 2, "{g:?}");
        let c = cycle(&g, "a", &mut Vec::new(), &mut BTreeSet::new()).unwrap();
        assert_eq!(c, ["a", "b"]);
    }
}
