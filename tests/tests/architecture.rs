//! The native library's layering, checked on its source: clap and anyhow only in `cmd/` (and
//! `main.rs`), and every `crate::X` reference pointing down the layer order below, so there
//! are no import cycles between modules (the report never reads the pipeline, nothing below
//! `cmd/` sees the command layer).
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Low to high. A module may use the modules before it (and itself).
const ORDER: &[&str] = &[
    "error", "params", "io", "nn", "train", "split", "import", "synthetic", "foundation", "generator", "distill", "evaluate",
    "report", "bench", "pipeline", "cmd",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Code without `//` comments (doc comments mention other modules freely).
fn code(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Top-level modules named by `crate::X` paths and `use crate::{X, Y::…}` groups.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + 7..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name = ident(part.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

#[test]
fn layers_point_down_and_clap_stays_in_cmd() {
    let src = common::workspace_root().join("native/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 30, "found only {} files under {}", files.len(), src.display());
    let mut problems = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if first == "main" || first == "lib" {
            continue;
        }
        let rank = ORDER.iter().position(|m| *m == first).unwrap_or_else(|| panic!("{}: module {first} is not in ORDER", rel.display()));
        let text = code(&std::fs::read_to_string(f).unwrap());
        if first != "cmd" {
            for banned in ["clap::", "anyhow", "crate::cmd"] {
                if text.contains(banned) {
                    problems.push(format!("{}: uses {banned} below cmd/", rel.display()));
                }
            }
        }
        for r in crate_refs(&text) {
            // re-exports at the crate root (`crate::Error`, `crate::Result`) belong to `error`
            let target = match r.as_str() {
                "Error" | "Result" => "error",
                other => other,
            };
            match ORDER.iter().position(|m| *m == target) {
                Some(k) if k <= rank => {}
                Some(_) => problems.push(format!("{}: module {first} uses crate::{target}, a layer above it", rel.display())),
                None => problems.push(format!("{}: crate::{target} is not a known module", rel.display())),
            }
        }
    }
    assert!(problems.is_empty(), "layering violations:\n{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_violations() {
    let refs = crate_refs(&code("use crate::{io::fs, nn};\nlet x = crate::pipeline::run(); // crate::cmd in a comment"));
    assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["io", "nn", "pipeline"]);
}
