//! `scdd run` end to end on a 600-cell subset of the pancreas data with tiny models: the report
//! files exist and parse, the table has the expected rows, a second run reuses every stage, and
//! changing `[distill] steps` re-runs only the distillation (of the optimising method), its
//! decoding and its evaluation.
mod common;

use scdd::io::h5ad::{read_h5ad, write_h5ad, ReadOptions};
use scdd::pipeline::{self, Config, RunOptions};
use std::collections::BTreeMap;
use std::path::Path;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/pancreas_endocrinogenesis_e15_2k_genes_SuperCell.h5ad");

fn write_subset(path: &Path) {
    let ds = read_h5ad(Path::new(DATA), &ReadOptions::default()).unwrap();
    let step = ds.n_cells() / 600;
    let rows: Vec<usize> = (0..ds.n_cells()).step_by(step.max(1)).take(600).collect();
    write_h5ad(path, &ds.select_cells(&rows), &BTreeMap::new()).unwrap();
}

fn config_text(data: &Path, out: &Path, steps: usize) -> String {
    format!(
        r#"
out_dir = "{out}"
seed = 1
device = "cpu"
threads = 2

[[dataset]]
name = "tiny"
path = "{data}"
label = "cell_type"

[foundation]
hidden = [64]
latent_dim = 16
epochs = 2

[generator]
hidden = [32, 16]
emb_dim = 32
steps = 60
timesteps = 100
holdout = 0

[distill]
methods = ["dm+dc", "random"]
spc = [1, 3]
steps = {steps}
real_batch = 32

[evaluate]
repeats = 2
steps = 100

[report]
genes_per_class = 2
"#,
        out = out.display(),
        data = data.display()
    )
}

#[test]
fn run_report_and_stage_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiny.h5ad");
    write_subset(&data);
    let out = dir.path().join("run");
    let cfg_path = dir.path().join("tiny.toml");
    std::fs::write(&cfg_path, config_text(&data, &out, 4)).unwrap();

    // First run through the binary: every stage runs, the table is printed.
    let o = common::scdd(&["run", cfg_path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "scdd run failed:\n{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(!stdout.lines().any(|l| l.trim_start().starts_with("reused")), "a fresh run reused something:\n{stdout}");
    assert!(stdout.contains(" stages ran, 0 reused"), "{stdout}");
    for row in ["| Method |", "| scDD (DM+DC) |", "| Random real cells |", "| Full training set |", "tiny · SPC 1", "tiny · SPC 3"] {
        assert!(stdout.contains(row), "{row:?} missing from the printed table:\n{stdout}");
    }

    // The report.
    let report = out.join("report");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    for row in [
        "| scDD (DM+DC) |",
        "| Random real cells |",
        "| Full training set |",
        "| *Compression ratio* |",
        "Macro-F1",
        "— mean of gene-space evaluators",
        "## Accuracy (%) — encoder + linear (paper)",
        "## Accuracy (%) — MLP (genes)",
    ] {
        assert!(md.contains(row), "{row:?} missing from report.md");
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap()).unwrap();
    let d = &json["datasets"][0];
    assert_eq!(d["name"], "tiny");
    let results = d["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "2 methods × 2 SPC");
    for r in results {
        let acc = r["accuracy_mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        // The headline is the mean of the gene-space evaluators; the paper's default is kept.
        assert_eq!(r["evaluator"], "genes-mean");
        let by = r["by_evaluator"].as_array().unwrap();
        let get = |name: &str| by.iter().find(|s| s["evaluator"] == name).unwrap_or_else(|| panic!("{name} missing"))["accuracy_mean"].as_f64().unwrap();
        assert!((acc - (get("lr") + get("mlp")) / 2.0).abs() < 1e-12);
        assert!((0.0..=1.0).contains(&get("default")));
        assert!(r["per_class_accuracy"].as_object().unwrap().len() >= 2);
        let ratio = r["compression_ratio"].as_f64().unwrap();
        assert!(ratio > 0.0 && ratio < 0.2, "{ratio}");
    }
    let dmdc = results.iter().find(|r| r["method"] == "dm+dc" && r["spc"] == 1).unwrap();
    assert_eq!(dmdc["distill_steps"], 4);
    // Decoded cells are valid cells: non-negative, at most log1p(1e4), Σ expm1 = 1e4.
    for r in results.iter().filter(|r| r["method"] == "dm+dc") {
        let v = &r["validity"];
        assert_eq!(v["out_of_range"].as_f64().unwrap(), 0.0, "{v}");
        assert!(v["sum_deviation"].as_f64().unwrap() < 1e-3, "{v}");
    }
    assert!(d["foundation"]["heldout"]["pearson"].as_f64().unwrap().is_finite());
    assert!(d["full"]["accuracy_mean"].as_f64().unwrap() > 0.0);
    for f in ["embedding_tiny_spc1.svg", "embedding_tiny_spc3.svg", "loss_tiny.svg", "heatmap_tiny.svg", "accuracy_tiny.svg"] {
        let s = std::fs::read_to_string(report.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"), "{f} is not an SVG document");
        assert!(md.contains(f), "report.md does not show {f}");
    }
    let kinds: Vec<&str> = json["stages"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect();
    for k in ["split", "foundation", "generator", "test-features", "distill", "decode", "evaluate"] {
        assert!(kinds.contains(&k), "stage {k} missing from report.json");
    }
    // done.json markers and the hash memo.
    let stages = out.join("stages");
    assert!(stages.join("hashes.json").exists());
    let n_dirs = std::fs::read_dir(&stages).unwrap().filter(|e| e.as_ref().unwrap().path().join("done.json").exists()).count();
    assert_eq!(n_dirs, kinds.len(), "one complete directory per stage");

    // Second run (library): nothing runs.
    let cfg = Config::load(&cfg_path).unwrap();
    let second = pipeline::run(&cfg, &RunOptions::default()).unwrap();
    let ran: Vec<&str> = second.ran().iter().map(|s| s.label.as_str()).collect();
    assert!(ran.is_empty(), "second run re-ran {ran:?}");
    assert_eq!(second.stages.len(), kinds.len());
    assert!(second.table.contains("| Full training set |"));

    // Changing [distill] steps: only dm+dc's distill → decode → evaluate run again.
    std::fs::write(&cfg_path, config_text(&data, &out, 6)).unwrap();
    let cfg = Config::load(&cfg_path).unwrap();
    let third = pipeline::run(&cfg, &RunOptions::default()).unwrap();
    let ran = third.ran();
    let ran_kinds: std::collections::BTreeSet<&str> = ran.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(ran_kinds, ["decode", "distill", "evaluate"].into_iter().collect(), "{ran:?}");
    assert_eq!(ran.iter().filter(|s| s.kind == "distill").count(), 2, "dm+dc at SPC 1 and 3: {ran:?}");
    assert!(ran.iter().all(|s| !s.label.contains("random") && !s.label.contains("full")), "{ran:?}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap()).unwrap();
    let dmdc = json["datasets"][0]["results"].as_array().unwrap().iter().find(|r| r["method"] == "dm+dc").unwrap().clone();
    assert_eq!(dmdc["distill_steps"], 6);

    // --only-report renders from complete stages and runs nothing.
    let o = common::scdd(&["run", cfg_path.to_str().unwrap(), "--only-report"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("0 stages ran"), "{stdout}");
    // ... and refuses when a stage is missing.
    std::fs::write(&cfg_path, config_text(&data, &out, 7)).unwrap();
    let o = common::scdd(&["run", cfg_path.to_str().unwrap(), "--only-report"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("has not run yet"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn config_errors_name_the_key() {
    let e = Config::parse("[[dataset]]\nname = \"a\"\npath = \"x.h5ad\"\nlabel = \"l\"\n[evaluate]\nrepeat = 3\n").unwrap_err();
    assert!(format!("{e:#}").contains("repeat"), "{e:#}");
    let e = Config::parse("[[dataset]]\nname = \"a b\"\npath = \"x.h5ad\"\nlabel = \"l\"\n").unwrap_err();
    assert!(format!("{e:#}").contains("a b"), "{e:#}");
    let e = Config::parse("[[dataset]]\nname = \"a\"\npath = \"x.h5ad\"\nlabel = \"l\"\n[foundation]\nepochz = 3\n").unwrap_err();
    assert!(format!("{e:#}").contains("epochz") && format!("{e:#}").contains("[foundation]"), "{e:#}");
    let e = Config::parse("[[dataset]]\nname = \"a\"\npath = \"x.h5ad\"\nlabel = \"l\"\n[generator]\nlabel = \"x\"\n").unwrap_err();
    assert!(format!("{e:#}").contains("label"), "{e:#}");
    // The demo and all-datasets configs parse.
    let root = common::workspace_root();
    for c in ["configs/demo.toml", "configs/all-datasets.toml"] {
        let cfg = Config::load(&root.join(c)).unwrap_or_else(|e| panic!("{c}: {e:#}"));
        assert!(!cfg.datasets.is_empty());
    }
    let all = Config::load(&root.join("configs/all-datasets.toml")).unwrap();
    assert_eq!(all.datasets.len(), 5);
    assert_eq!(all.distill.spc, vec![1, 10]);
}
