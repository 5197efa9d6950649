//! The shape of the domain crate, checked: it depends on no I/O crate, and its modules form no
//! cycle. Both were true once only by intention; this keeps them true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Crates that do I/O with a database, a directory, a socket or TLS: adapters' business.
const IO_CRATES: [&str; 6] = [
    "rusqlite",
    "ldap3",
    "rustls",
    "rustls-native-certs",
    "mailferry-imap",
    "mailferry-adapters",
];

#[test]
fn core_depends_on_no_io_crate() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("Cargo.toml");
    let mut section = String::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if section != "[dependencies]" {
            continue;
        }
        let name = line.split(['=', '.', ' ']).next().unwrap_or("");
        assert!(
            !IO_CRATES.contains(&name),
            "mailferry-core depends on {name}: I/O belongs in mailferry-adapters"
        );
    }
}

/// The top-level module a source file belongs to (`engine/scan.rs` → `engine`).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(SRC).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `crate::x` references outside test code: test modules (a `tests.rs`, or what follows
/// `#[cfg(test)]`) and the `testing` module may reach anywhere.
fn references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        // Doc links name modules without depending on them.
        if line.trim_start().starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
        // `use crate::{a, b}` names several.
        if let Some(i) = line.find("crate::{") {
            for part in line[i + "crate::{".len()..].split([',', '}']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found
}

#[test]
fn the_modules_form_no_cycle() {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        if module == "lib" || module == "testing" || file.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read");
        let deps = graph.entry(module.clone()).or_default();
        for r in references(&text) {
            if r != module && r != "testing" {
                deps.insert(r);
            }
        }
    }
    assert!(graph.len() > 10, "too few modules read: {graph:?}");
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("module cycle: {} -> {m}", path[i..].join(" -> "));
        }
        path.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            visit(d, graph, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
    // The layers the architecture names: the engine never reaches up into the services, and
    // the ports never into the engine or the services.
    for (low, high) in [
        ("engine", "app"),
        ("ports", "engine"),
        ("ports", "app"),
        ("model", "ports"),
    ] {
        assert!(
            !graph.get(low).is_some_and(|d| d.contains(high)),
            "{low} uses {high}: {:?}",
            graph.get(low)
        );
    }
}
