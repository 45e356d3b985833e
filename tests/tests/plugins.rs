//! Plugin discovery with real shared libraries: a plugin written in plain C from the header
//! alone (plugins/examples/nearest_centroid.c), compiled here with the system C compiler, is
//! found on SCDD_PLUGIN_PATH and by path; a text file, a library without the descriptor and a
//! plugin of another ABI major version are listed as refused, each with its reason.

mod common;
use common::{scdd_env, workspace_root};
use std::path::{Path, PathBuf};
use std::process::Command;

fn cc(sources: &[&Path], out: &Path) {
    let root = workspace_root();
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c99", "-O1", "-Wall", "-Werror", "-shared", "-fPIC", "-I"])
        .arg(root.join("plugins/api/include"))
        .args(sources)
        .arg("-o")
        .arg(out)
        .arg("-lm")
        .status()
        .expect("a C compiler (cc) on PATH");
    assert!(status.success(), "cc failed for {sources:?}");
}

fn lib_name(stem: &str) -> String {
    format!("{}{stem}.{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_EXTENSION)
}

/// `source` compiled into `dir` as the shared library `stem`.
fn build(dir: &Path, stem: &str, source: &Path) -> PathBuf {
    let out = dir.join(lib_name(stem));
    cc(&[source], &out);
    out
}

#[test]
fn plugins_are_found_checked_and_refused_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let root = workspace_root();
    let nc = build(dir.path(), "nearest_centroid", &root.join("plugins/examples/nearest_centroid.c"));

    let other = dir.path().join("other.c");
    std::fs::write(&other, "int not_a_plugin(void) { return 1; }\n").unwrap();
    build(dir.path(), "other", &other);

    let future = dir.path().join("future.c");
    std::fs::write(
        &future,
        r#"#include "scdd_plugin.h"
static const ScddPluginDescriptor D = { SCDD_PLUGIN_MAGIC, 99, 0, sizeof(ScddPluginDescriptor), 0,
    "future", "9.9.9", "", 0, 0, 0, 0, 0 };
const ScddPluginDescriptor *scdd_plugin_descriptor(void) { return &D; }
"#,
    )
    .unwrap();
    build(dir.path(), "future", &future);
    std::fs::write(dir.path().join(lib_name("text")), "not a library\n").unwrap();

    // A named copy outside the search path, and one missing file.
    let named_dir = tempfile::tempdir().unwrap();
    let named: PathBuf = named_dir.path().join(lib_name("copy"));
    std::fs::copy(&nc, &named).unwrap();
    let missing = named_dir.path().join("missing.so");

    let env = [("SCDD_PLUGIN_PATH", dir.path().to_str().unwrap())];
    let out = scdd_env(&["plugins", "--json", named.to_str().unwrap(), missing.to_str().unwrap()], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    let by_file = |f: &str| {
        list.iter()
            .find(|c| c["path"].as_str().unwrap().ends_with(f))
            .unwrap_or_else(|| panic!("{f} not listed: {list:?}"))
    };
    for (f, origin) in [(lib_name("copy"), "path"), (lib_name("nearest_centroid"), "env-path")] {
        let c = by_file(&f);
        assert_eq!(c["origin"], origin);
        assert!(c["refused"].is_null(), "{c}");
        assert_eq!(c["info"]["name"], "nearest-centroid-c");
        assert_eq!(c["info"]["version"], "1.0.0");
        assert_eq!(c["info"]["abi"], format!("{}.{}", scdd_plugin_api::SCDD_PLUGIN_ABI_MAJOR, scdd_plugin_api::SCDD_PLUGIN_ABI_MINOR));
        assert_eq!(c["info"]["needs"], serde_json::json!(["log-normalised"]));
    }
    let refused = |f: &str| by_file(f)["refused"].as_str().unwrap_or_else(|| panic!("{f} accepted")).to_string();
    assert!(refused("missing.so").contains("no such file"));
    assert!(refused(&lib_name("text")).contains("not a loadable shared library"));
    assert!(refused(&lib_name("other")).contains("not an scdd plugin"));
    let v = refused(&lib_name("future"));
    assert!(v.contains("plugin ABI 99.0") && v.contains(&format!("ABI {}.", scdd_plugin_api::SCDD_PLUGIN_ABI_MAJOR)), "{v}");

    // The table names the same verdicts.
    let out = scdd_env(&["plugins"], &env);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| nearest-centroid-c | 1.0.0 |") && table.contains("refused: plugin ABI 99.0"), "{table}");
}

#[test]
fn a_plugin_runs_in_a_worker_and_its_failures_stay_there() {
    use scdd::evaluate::worker::{run_in_worker, PluginJob};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let root = workspace_root();
    let nc = build(dir.path(), "nearest_centroid", &root.join("plugins/examples/nearest_centroid.c"));
    let bad = build(dir.path(), "misbehave", &root.join("tests/c/misbehave.c"));

    // Three classes, each high on its own gene, with noise.
    let (g, k) = (6usize, 3usize);
    let cell = |c: usize, i: usize| -> Vec<f32> { (0..g).map(|j| if j % k == c { 3.0 } else { 0.0 } + ((i * 7 + j * 3) % 5) as f32 * 0.2).collect() };
    let (mut train, mut labels, mut test, mut truth) = (vec![], vec![], vec![], vec![]);
    for i in 0..30 {
        train.extend(cell(i % k, i));
        labels.push((i % k) as u32);
        test.extend(cell((i + 1) % k, i + 100));
        truth.push(((i + 1) % k) as u32);
    }
    let classes: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let genes: Vec<String> = (0..g).map(|j| format!("G{j}")).collect();
    let job = |config: &'static str| PluginJob { config_json: config, seed: 1, class_names: &classes, genes: &genes, train: &train, labels: &labels, test: &test };
    let worker = common::scdd_bin();
    let limit = Duration::from_secs(20);

    let p = run_in_worker(&worker, &nc, &job("{}"), limit).unwrap();
    assert_eq!(p.labels, truth, "nearest centroid separates the three classes");
    assert!(p.probs.chunks(k).all(|r| (r.iter().sum::<f32>() - 1.0).abs() < 1e-4));
    assert_eq!(run_in_worker(&worker, &bad, &job(r#"{"do": "ok"}"#), limit).unwrap().labels, vec![0; 30]);

    let fail = |config: &'static str, limit: Duration| run_in_worker(&worker, &bad, &job(config), limit).unwrap_err();
    assert!(fail(r#"{"do": "error"}"#, limit).contains("fit: this plugin refuses to fit"));
    let e = fail(r#"{"do": "segfault"}"#, limit);
    assert!(e.contains("signal 11") && e.contains("SIGSEGV"), "{e}");
    let e = fail(r#"{"do": "abort"}"#, limit);
    assert!(e.contains("signal 6") && e.contains("SIGABRT"), "{e}");
    let t = std::time::Instant::now();
    let e = fail(r#"{"do": "hang"}"#, Duration::from_secs(2));
    assert!(e.contains("time limit of 2 s"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(15), "the hung worker was not stopped");
    assert!(fail(r#"{"do": "nan"}"#, limit).contains("probability NaN"));
    assert!(fail(r#"{"do": "range"}"#, limit).contains("class id 3 for cell 0, out of range"));
    // Not a plugin: refused in the worker, before any call.
    let text = dir.path().join("text.so");
    std::fs::write(&text, "no").unwrap();
    assert!(run_in_worker(&worker, &text, &job("{}"), limit).unwrap_err().contains("not a loadable shared library"));
}
