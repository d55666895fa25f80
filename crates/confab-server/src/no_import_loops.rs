//! The server's modules import one another without a loop (ARCHITECTURE.md):
//! a module that two others import in a loop hides the piece they share.
//!
//! Reads the crate's own sources: an edge `a -> b` is a `crate::b` path in
//! `a` (outside comments and its `tests` module), a `super::` path in a child
//! module, or a parent using its child's items by path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every module of the crate (`session::rooms` for `src/session/rooms.rs`)
/// with its source, tests and comments left out.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let name = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("::");
            let mut text = std::fs::read_to_string(&path).expect("read source");
            if let Some(at) = text.find("#[cfg(test)]\nmod tests") {
                text.truncate(at);
            }
            let code: String = text
                .lines()
                .map(|line| line.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            out.insert(if name == "lib" { "crate".into() } else { name }, code);
        }
    }
    out
}

/// Whether `text` names `path` as a whole path (not the tail or the head of a
/// longer name): followed by `::` when `then_colons`, else by anything but a
/// name's character (`crate::validate;` names the module `validate`).
fn names(text: &str, path: &str, then_colons: bool) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(path).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = &text[at + path.len()..];
        !before.is_some_and(|c| ident(c) || c == ':')
            && if then_colons {
                after.starts_with("::")
            } else {
                !after.chars().next().is_some_and(ident)
            }
    })
}

fn edges(modules: &BTreeMap<String, String>) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (module, text) in modules {
        let out = edges.entry(module).or_default();
        for other in modules.keys() {
            if other == module || other == "crate" {
                continue;
            }
            let top_level = !other.contains("::");
            let child = other
                .strip_prefix(module.as_str())
                .and_then(|rest| rest.strip_prefix("::"));
            if (top_level && names(text, &format!("crate::{other}"), false))
                || child.is_some_and(|c| names(text, c, true))
            {
                out.insert(other);
            }
        }
        if let Some((parent, _)) = module.rsplit_once("::") {
            if names(text, "super", true) {
                out.insert(modules.get_key_value(parent).map_or("crate", |(k, _)| k));
            }
        }
    }
    edges
}

/// A loop among the modules (the crate root aside, which declares them all).
fn find_loop<'a>(edges: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if *next != "crate" {
                if let Some(cycle) = visit(next, edges, path, done) {
                    return Some(cycle);
                }
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .filter(|m| **m != "crate")
        .find_map(|m| visit(m, edges, &mut Vec::new(), &mut done))
}

#[test]
fn the_servers_modules_import_each_other_without_a_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    assert!(
        modules.contains_key("session::rooms"),
        "{:?}",
        modules.keys()
    );
    let edges = edges(&modules);
    assert!(
        edges["session"].contains("state") && edges["session::rooms"].contains("session"),
        "the reader finds imports: {edges:?}"
    );
    if let Some(cycle) = find_loop(&edges) {
        panic!("import loop: {}", cycle.join(" -> "));
    }
}

#[test]
fn a_loop_is_found() {
    let modules: BTreeMap<String, String> = [
        ("a", "use crate::b::X;"),
        ("b", "fn f() { crate::c::g() }"),
        ("c", "use crate::a; fn h() { crate::abc::x() }"),
        ("c::d", "use super::Y;"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let edges = edges(&modules);
    assert_eq!(edges["c::d"], BTreeSet::from(["c"]));
    assert_eq!(find_loop(&edges), Some(vec!["a", "b", "c", "a"]));
}
