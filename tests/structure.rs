//! The layout rule of ARCHITECTURE.md §2, checked on the source: inside `connectors` and inside
//! `relay`, no module uses a module that uses it back (directly or through others). A circle
//! means two concerns that cannot be read, tested or changed apart; this test names every
//! circle it finds with the paths that make it.
//!
//! Read as text, like a reviewer would: every `crate::`, `super::` and `self::` path outside
//! comments and `#[cfg(test)]` modules is an edge from its file to the module the path names
//! (the longest prefix that is a module file). `pub use` re-exports and `mod` declarations are
//! not uses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path inside its crate: `["onebot_ws", "session"]`; the root is empty.
type ModulePath = Vec<String>;

/// Every `.rs` file below `dir`, with its module path.
fn modules(root: &Path, dir: &Path, found: &mut BTreeMap<ModulePath, PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            modules(root, &path, found);
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let relative = path.strip_prefix(root).unwrap_or(&path).with_extension("");
        let mut segments: ModulePath = relative
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        match segments.last().map(String::as_str) {
            Some("main") => continue, // a binary crate of its own: it uses the lib by name
            Some("lib") | Some("mod") => {
                segments.pop();
            }
            _ => {}
        }
        found.insert(segments, path);
    }
}

/// The source that counts: no comments, no `#[cfg(test)]` module, no re-export lines.
fn code_of(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break; // test modules sit at the end of a file in this project
        }
        if trimmed.starts_with("//") || trimmed.starts_with("pub use ") {
            continue;
        }
        let without_comment = match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        kept.push_str(without_comment);
        kept.push('\n');
    }
    kept
}

/// The paths a use tree starting at `text` (just after `crate::`) names, as segment lists:
/// `a::{b::C, d}` gives `[a, b, C]` and `[a, d]`.
fn tree_paths(text: &str) -> Vec<Vec<String>> {
    fn parse(chars: &[char], at: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        let mut word = String::new();
        while *at < chars.len() {
            let c = chars[*at];
            if c.is_alphanumeric() || c == '_' {
                word.push(c);
                *at += 1;
            } else if c == ':' {
                if !word.is_empty() {
                    path.push(std::mem::take(&mut word));
                }
                *at += 1;
            } else if c == '{' {
                *at += 1;
                loop {
                    parse(chars, at, &path, out);
                    match chars.get(*at) {
                        Some(',') => *at += 1,
                        Some('}') => {
                            *at += 1;
                            return;
                        }
                        _ => return,
                    }
                }
            } else if c.is_whitespace() && word.is_empty() {
                *at += 1;
            } else {
                break;
            }
        }
        if !word.is_empty() {
            path.push(word);
        }
        if path.len() > prefix.len() {
            out.push(path);
        }
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    parse(&chars, &mut 0, &[], &mut out);
    out
}

/// The module `path` (absolute) lands in: its longest prefix that is a module.
fn resolve<'a>(
    path: &[String],
    known: &'a BTreeMap<ModulePath, PathBuf>,
) -> Option<&'a ModulePath> {
    (0..=path.len())
        .rev()
        .find_map(|n| known.get_key_value(&path[..n]).map(|(key, _)| key))
}

/// Module-to-module uses of one crate.
fn edges(src: &Path) -> BTreeMap<ModulePath, BTreeSet<ModulePath>> {
    let mut known = BTreeMap::new();
    modules(src, src, &mut known);
    let mut graph: BTreeMap<ModulePath, BTreeSet<ModulePath>> = BTreeMap::new();
    for (module, file) in &known {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let code = code_of(&text);
        for anchor in ["crate::", "super::", "self::"] {
            let mut rest = code.as_str();
            while let Some(at) = rest.find(anchor) {
                let before = rest[..at].chars().last();
                rest = &rest[at + anchor.len()..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue; // `qunbridge_connectors::…`, `x::super`: not ours
                }
                // The module a relative path starts from: `self` is the file's own module,
                // `super` its parent, `crate` the root.
                let base: ModulePath = match anchor {
                    "crate::" => Vec::new(),
                    "self::" => module.clone(),
                    _ => module[..module.len().saturating_sub(1)].to_vec(),
                };
                for tail in tree_paths(rest) {
                    let mut absolute = base.clone();
                    absolute.extend(tail);
                    if let Some(target) = resolve(&absolute, &known) {
                        if target != module {
                            graph
                                .entry(module.clone())
                                .or_default()
                                .insert(target.clone());
                        }
                    }
                }
            }
        }
    }
    graph
}

/// Every circle of the graph, each once, as the modules along it.
fn circles(graph: &BTreeMap<ModulePath, BTreeSet<ModulePath>>) -> Vec<Vec<ModulePath>> {
    // Tarjan-free and small: a circle exists through `a` when `a` reaches itself; report the
    // strongly connected groups by mutual reachability.
    let reach = |from: &ModulePath| -> BTreeSet<ModulePath> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(next) = stack.pop() {
            for to in graph.get(&next).into_iter().flatten() {
                if seen.insert(to.clone()) {
                    stack.push(to.clone());
                }
            }
        }
        seen
    };
    let mut reported: BTreeSet<ModulePath> = BTreeSet::new();
    let mut found = Vec::new();
    for module in graph.keys() {
        if reported.contains(module) {
            continue;
        }
        let from_here = reach(module);
        if !from_here.contains(module) {
            continue;
        }
        let group: Vec<ModulePath> = from_here
            .iter()
            .filter(|other| reach(other).contains(module))
            .cloned()
            .collect();
        reported.extend(group.iter().cloned());
        found.push(group);
    }
    found
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn describe(crate_name: &str, found: &[Vec<ModulePath>]) -> String {
    found
        .iter()
        .map(|group| {
            let names: Vec<String> = group
                .iter()
                .map(|m| format!("{crate_name}::{}", m.join("::")))
                .collect();
            names.join(" <-> ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_module_of_connectors_uses_one_that_uses_it_back() {
    let graph = edges(&workspace().join("connectors/src"));
    assert!(graph.len() > 20, "the connectors' modules were not read");
    let found = circles(&graph);
    assert!(found.is_empty(), "{}", describe("connectors", &found));
}

#[test]
fn no_module_of_relay_uses_one_that_uses_it_back() {
    let graph = edges(&workspace().join("relay/src"));
    assert!(graph.len() > 20, "the relay's modules were not read");
    let found = circles(&graph);
    assert!(found.is_empty(), "{}", describe("relay", &found));
}

#[test]
fn a_circle_is_found_and_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod c;\n").expect("lib");
    std::fs::write(src.join("a.rs"), "use crate::b::{Thing, other::X};\n").expect("a");
    std::fs::create_dir(src.join("b")).expect("b/");
    std::fs::write(src.join("b/mod.rs"), "pub mod other;\nuse super::c::Y;\n").expect("b");
    std::fs::write(src.join("b/other.rs"), "// use crate::a::Z;\n").expect("other");
    std::fs::write(
        src.join("c.rs"),
        "fn f() { crate::a::g() }\n#[cfg(test)]\nmod tests { use crate::b::Q; }\n",
    )
    .expect("c");
    let graph = edges(src);
    let found = circles(&graph);
    assert_eq!(describe("x", &found), "x::a <-> x::b <-> x::c");
    // The commented-out use in b/other.rs and the test module's use in c.rs are not edges.
    assert!(!graph.contains_key(&vec!["b".to_owned(), "other".to_owned()]));
    assert_eq!(graph[&vec!["c".to_owned()]].len(), 1);
}
