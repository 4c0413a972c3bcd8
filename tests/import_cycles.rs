//! No file-level import cycles in the three crates: a module may use its children and its
//! siblings, but two files never use each other, directly or around a loop. A path is read from
//! every `crate::`, `super::` and `self::` in a file (groups `{a, b::c}` expanded), outside its
//! `#[cfg(test)] mod tests`, and resolved to the deepest module file it names; a child naming
//! its own ancestor is not an edge (that is how a child reaches the types its parent declares).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a failed step should fail the test loudly

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(root: &Path, file: &Path) -> Module {
    let relative = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Module = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path a file names from `crate`, `super` or `self`, as written (groups expanded).
fn paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(found) = text[from..].find(start) {
            let at = from + found;
            from = at + start.len();
            if at > 0 && text[..at].ends_with(|c: char| is_ident(c) || c == ':') {
                continue;
            }
            expand(&text[at..], Vec::new(), &mut out);
        }
    }
    out
}

/// Reads `a::b::{c, d::e}` from the start of `text`, after `prefix`.
fn expand(text: &str, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut rest = text;
    loop {
        let name_len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if name_len > 0 {
            prefix.push(rest[..name_len].to_string());
            rest = &rest[name_len..];
        }
        if let Some(after) = rest.strip_prefix("::") {
            rest = after;
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 1;
                let end = group
                    .char_indices()
                    .find(|(_, c)| {
                        match c {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            _ => {}
                        }
                        depth == 0
                    })
                    .map_or(group.len(), |(i, _)| i);
                let mut item_start = 0;
                let mut level = 0;
                let inner = &group[..end];
                for (i, c) in inner.char_indices().chain([(inner.len(), ',')]) {
                    match c {
                        '{' => level += 1,
                        '}' => level -= 1,
                        ',' if level == 0 => {
                            let item = inner[item_start..i].trim();
                            if !item.is_empty() {
                                expand(item, prefix.clone(), out);
                            }
                            item_start = i + 1;
                        }
                        _ => {}
                    }
                }
                return;
            }
            continue;
        }
        out.push(prefix);
        return;
    }
}

fn resolve(from: &Module, written: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    let mut path: Module = Vec::new();
    let mut parts = written.iter().peekable();
    match parts.peek().map(|s| s.as_str()) {
        Some("crate") => {
            parts.next();
        }
        _ => path.clone_from(from),
    }
    while let Some(part) = parts.next_if(|p| *p == "super" || *p == "self") {
        if part == "super" {
            path.pop();
        }
    }
    path.extend(parts.cloned());
    (0..=path.len())
        .rev()
        .map(|len| path[..len].to_vec())
        .find(|candidate| modules.contains(candidate))
}

fn cycles_in(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let by_module: BTreeMap<Module, PathBuf> = files
        .iter()
        .map(|f| (module_of(root, f), f.clone()))
        .collect();
    let modules: BTreeSet<Module> = by_module.keys().cloned().collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in &by_module {
        let text = std::fs::read_to_string(file).unwrap();
        let text = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for written in paths(&code) {
            let Some(target) = resolve(module, &written, &modules) else {
                continue;
            };
            let is_ancestor = target.len() < module.len() && module.starts_with(&target);
            if target != *module && !is_ancestor {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for start in &modules {
        let mut stack = vec![start.clone()];
        walk(&edges, &mut stack, &mut done, &mut found);
    }
    found
}

fn walk(
    edges: &BTreeMap<Module, BTreeSet<Module>>,
    stack: &mut Vec<Module>,
    done: &mut BTreeSet<Module>,
    found: &mut Vec<String>,
) {
    let Some(current) = stack.last().cloned() else {
        return;
    };
    if done.contains(&current) {
        return;
    }
    for next in edges.get(&current).into_iter().flatten() {
        if let Some(at) = stack.iter().position(|m| m == next) {
            let cycle: Vec<String> = stack[at..]
                .iter()
                .chain([next])
                .map(|m| m.join("::"))
                .collect();
            found.push(cycle.join(" -> "));
        } else {
            stack.push(next.clone());
            walk(edges, stack, done, found);
            stack.pop();
        }
    }
    done.insert(current);
}

#[test]
fn no_two_files_use_each_other() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cycles = Vec::new();
    for crate_root in ["src", "engine/src", "reconciler/src"] {
        for cycle in cycles_in(&manifest.join(crate_root)) {
            cycles.push(format!("{crate_root}: {cycle}"));
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_reader_finds_grouped_and_nested_paths() {
    let found = paths("use super::{a::{B, c}, d};\nlet x = crate::e::f(1);");
    let names: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        names,
        ["crate::e::f", "super::a::B", "super::a::c", "super::d"]
    );
}
