//! The layers of `src/` import downwards only. Each top-level module may use the modules listed
//! for it here and in the README's "Where things live", and no other; test code (after a
//! `#[cfg(test)]`, and the engine's `test_support.rs`) may reach further, since tests build
//! their input the way a user writes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module -> the modules of this crate it may use.
const ALLOWED: &[(&str, &[&str])] = &[
    ("oci", &[]),
    ("http_client", &[]),
    ("telemetry", &[]),
    ("intent", &["oci"]),
    ("registry", &["oci", "http_client"]),
    ("sources", &["oci", "http_client"]),
    ("api", &["oci", "intent"]),
    ("engine", &["oci", "intent", "registry", "sources"]),
    ("manifests", &["api"]),
    ("metrics", &["registry"]),
    ("http", &["metrics"]),
    (
        "controller",
        &[
            "oci",
            "intent",
            "registry",
            "sources",
            "api",
            "engine",
            "metrics",
            "http",
            "telemetry",
        ],
    ),
    (
        "cli",
        &[
            "oci",
            "intent",
            "registry",
            "sources",
            "http_client",
            "api",
            "engine",
            "manifests",
            "metrics",
            "http",
            "telemetry",
            "controller",
        ],
    ),
];

/// The Rust files of top-level module `name`: `src/name.rs` and everything under `src/name/`.
fn files_of(src: &Path, name: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let single = src.join(format!("{name}.rs"));
    if single.exists() {
        files.push(single);
    }
    let mut folders = vec![src.join(name)];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The modules of this crate that the non-test code of `text` names (`crate::x`). An item
/// under `#[cfg(test)]` is test code: a one-line item (`mod fake_api;`, a `use`) is skipped,
/// a block (`mod tests {`) runs to the end of the file, where this project keeps its tests.
fn uses(text: &str) -> BTreeSet<String> {
    let mut code = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "#[cfg(test)]" {
            code.push_str(line);
            code.push('\n');
            continue;
        }
        match lines.next() {
            Some(item) if item.trim_end().ends_with('{') => break,
            _ => continue,
        }
    }
    let re = regex::Regex::new(r"crate::([a-z_]+)").unwrap();
    re.captures_iter(&code).map(|c| c[1].to_string()).collect()
}

#[test]
fn modules_import_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let declared: BTreeSet<String> = regex::Regex::new(r"(?m)^\s*(?:pub\s+)?mod ([a-z_]+);")
        .unwrap()
        .captures_iter(&lib)
        .map(|c| c[1].to_string())
        .collect();
    let mut problems = Vec::new();
    for module in &declared {
        let Some(may_use) = allowed.get(module.as_str()) else {
            problems.push(format!(
                "{module}: not in the layer table of tests/layers.rs"
            ));
            continue;
        };
        let files = files_of(&src, module);
        assert!(!files.is_empty(), "{module} has no files");
        for file in files {
            if file.file_name().is_some_and(|n| n == "test_support.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for used in uses(&text) {
                if used != *module && !may_use.contains(&used.as_str()) {
                    problems.push(format!(
                        "{} uses crate::{used}, which {module} may not",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_an_import_and_ignores_test_code() {
    let text = "#[cfg(test)]\nmod fake;\nuse crate::engine::Engine;\nfn f() {}\n#[cfg(test)]\nmod tests {\n use crate::cli;\n}";
    assert_eq!(uses(text), BTreeSet::from(["engine".to_string()]));
}
