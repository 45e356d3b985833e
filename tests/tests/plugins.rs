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
    let job = |config: &'static str| PluginJob { config_json: config, seed: 1, class_names: &classes, genes: &genes, train: &train, labels: &labels, test: &test, log1p: true };
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

/// A workspace plugin (`plugins/NAME`) built by cargo into the binary's directory, where scdd
/// finds it by name.
fn workspace_plugin(name: &str) -> PathBuf {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "-p", &format!("scdd-plugin-{name}")])
        .current_dir(workspace_root())
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build -p scdd-plugin-{name} failed");
    let lib = common::profile_dir().join(lib_name(&format!("scdd_plugin_{name}")));
    assert!(lib.is_file(), "{} not built", lib.display());
    lib
}

/// Pancreas cells for `scdd evaluate`: every `step`-th cell from 0 as training, from `step / 2`
/// as test, and a random generator bundle for their genes and classes. Returns (train, test, bundle).
fn eval_fixture(dir: &Path, step: usize) -> (PathBuf, PathBuf, PathBuf) {
    use scdd::io::h5ad::{read_h5ad, write_h5ad, ReadOptions};
    let ds = read_h5ad(Path::new(PANCREAS), &ReadOptions::default()).unwrap();
    let rows = |start: usize| (start..ds.n_cells()).step_by(step).collect::<Vec<usize>>();
    let (train, test, gen) = (dir.join("train.h5ad"), dir.join("test.h5ad"), dir.join("gen.scddg"));
    write_h5ad(&train, &ds.select_cells(&rows(0)), &Default::default()).unwrap();
    write_h5ad(&test, &ds.select_cells(&rows(step / 2)), &Default::default()).unwrap();
    std::fs::write(&gen, common::random_generator(&ds, 8, 16, 1).to_bytes()).unwrap();
    (train, test, gen)
}

const PANCREAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/pancreas_endocrinogenesis_e15_2k_genes_SuperCell.h5ad");

#[test]
fn the_celltypist_plugin_finds_scikit_learns_one_vs_rest_solution_on_real_cells() {
    use scdd::evaluate::worker::{run_in_worker, PluginJob};
    let plugin = workspace_plugin("celltypist");
    let reference: serde_json::Value = serde_json::from_str(&common::run_py("sklearn_celltypist.py", &[PANCREAS, "cell_type"])).unwrap();
    let common::Halves { ds, classes: sorted, y, train, test } = common::halves(Path::new(PANCREAS), "cell_type");
    let x_train: Vec<f32> = ds.x.dense_rows(&train).iter().copied().collect();
    let x_test: Vec<f32> = ds.x.dense_rows(&test).iter().copied().collect();
    let y_train: Vec<u32> = train.iter().map(|&i| y[i]).collect();
    let job = PluginJob {
        config_json: "{}",
        seed: 0,
        class_names: &sorted,
        genes: &ds.genes,
        train: &x_train,
        labels: &y_train,
        test: &x_test,
        log1p: true,
    };
    let p = run_in_worker(&common::scdd_bin(), &plugin, &job, std::time::Duration::from_secs(600)).unwrap();
    let theirs: Vec<u32> = reference["pred"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let agree = p.labels.iter().zip(&theirs).filter(|(a, b)| a == b).count() as f64 / theirs.len() as f64;
    let acc = p.labels.iter().zip(&test).filter(|(a, &i)| **a == y[i]).count() as f64 / test.len() as f64;
    let their_acc = reference["accuracy"].as_f64().unwrap();
    assert!(agree >= 0.98, "predictions agree on {:.2} % of held-out cells", 100.0 * agree);
    assert!((acc - their_acc).abs() <= 0.01, "accuracy {acc:.4} vs scikit-learn {their_acc:.4}");
}

#[test]
fn scdd_evaluate_runs_plugins_next_to_built_ins_and_records_each_failure() {
    workspace_plugin("celltypist");
    let dir = tempfile::tempdir().unwrap();
    let bad = build(dir.path(), "misbehave", &workspace_root().join("tests/c/misbehave.c"));
    let (train, test, gen) = eval_fixture(dir.path(), 6);
    let json = dir.path().join("eval.json");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let evaluators = format!("lr,celltypist,{}", s(&bad));
    let run = |extra: &[&str]| {
        let mut args = vec!["evaluate".to_string(), s(&train), "--test".into(), s(&test), "-m".into(), s(&gen), "--repeats".into(), "2".into()];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::scdd(&args)
    };
    let out = run(&["--evaluators", &evaluators, "--plugin-config", r#"misbehave={"do": "segfault"}"#, "--json", &s(&json)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let names: Vec<&str> = r["results"].as_array().unwrap().iter().map(|e| e["evaluator"].as_str().unwrap()).collect();
    assert_eq!(names, ["lr", "celltypist"]);
    let ct = &r["results"][1];
    assert_eq!(ct["repeats"], 2);
    let (lr_acc, ct_acc) = (r["results"][0]["accuracy_mean"].as_f64().unwrap(), ct["accuracy_mean"].as_f64().unwrap());
    assert!(ct_acc > 0.7 && (ct_acc - lr_acc).abs() < 0.1, "celltypist {ct_acc} vs lr {lr_acc}");
    let f = &r["failures"][0];
    assert_eq!(f["evaluator"], "misbehave");
    assert!(f["error"].as_str().unwrap().contains("SIGSEGV"), "{f}");
    assert!(stdout.contains("misbehave") && stdout.contains("failed: seed 0: worker killed by signal 11"), "{stdout}");

    // Bad input stops before any work, naming the problem.
    let err = |extra: &[&str]| String::from_utf8_lossy(&run(extra).stderr).into_owned();
    assert!(err(&["--evaluators", "lr,celltypst"]).contains("unknown evaluator 'celltypst'"));
    assert!(err(&["--evaluators", "lr", "--plugin-config", "celltypist={oops"]).contains("invalid JSON"));
    assert!(err(&["--evaluators", "lr", "--plugin-config", "celltypist={}"]).contains("no plugin of that name"));
    assert!(err(&["--evaluators", "lr,/no/such/plugin.so"]).contains("no such file"));
    // A config the plugin refuses costs only that evaluator.
    let out = run(&["--evaluators", "lr,celltypist", "--plugin-config", r#"celltypist={"c": -1}"#]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed: seed 0: create: config c = -1: must be positive"));
}

#[test]
fn a_python_file_with_fit_and_predict_is_an_evaluator() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test, gen) = eval_fixture(dir.path(), 8);
    let broken = dir.path().join("broken.py");
    std::fs::write(&broken, "def fit(X, y, genes, seed):\n    raise RuntimeError('no model today')\n\ndef predict(X):\n    return X\n").unwrap();
    let example = workspace_root().join("plugins/examples/sklearn_evaluator.py");
    let json = dir.path().join("eval.json");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let evaluators = format!("lr,{},{}", s(&example), s(&broken));
    let python = common::python();
    let out = scdd_env(
        &[
            "evaluate", &s(&train), "--test", &s(&test), "-m", &s(&gen), "--repeats", "2", "--evaluators", &evaluators,
            "--plugin-config", r#"sklearn_evaluator={"n_estimators": 30}"#, "--json", &s(&json),
        ],
        &[("SCDD_PYTHON", python.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rf = r["results"].as_array().unwrap().iter().find(|e| e["evaluator"] == "sklearn_evaluator").expect("the Python evaluator ran");
    assert_eq!(rf["repeats"], 2);
    let (rf_acc, lr_acc) = (rf["accuracy_mean"].as_f64().unwrap(), r["results"][0]["accuracy_mean"].as_f64().unwrap());
    assert!(rf_acc > 0.6 && rf_acc > lr_acc - 0.15, "random forest {rf_acc} vs lr {lr_acc}");
    assert_eq!(r["failures"][0]["evaluator"], "broken");
    assert!(r["failures"][0]["error"].as_str().unwrap().contains("RuntimeError: no model today"), "{}", r["failures"][0]);
}

#[test]
fn cells_are_scored_without_a_bundle_by_gene_space_evaluators() {
    let dir = tempfile::tempdir().unwrap();
    let (train, test, gen) = eval_fixture(dir.path(), 8);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let run = |extra: &[&str], json: &Path| {
        let mut a = vec!["evaluate".to_string(), s(&train), "--test".into(), s(&test), "--evaluators".into(), "lr,celltypist".into()];
        a.extend(["--repeats", "1", "--label", "cell_type", "--json"].iter().map(|v| v.to_string()));
        a.push(s(json));
        a.extend(extra.iter().map(|v| v.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = common::scdd(&a);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
        r["results"].as_array().unwrap().iter().map(|e| (e["evaluator"].as_str().unwrap().to_string(), e["accuracy_mean"].as_f64().unwrap())).collect::<Vec<_>>()
    };
    // The bundle's genes are the file's here, so the scores are the same with and without it.
    let without = run(&[], &dir.path().join("a.json"));
    let with = run(&["-m", &s(&gen)], &dir.path().join("b.json"));
    assert_eq!(without, with);
    assert!(without.iter().all(|(_, a)| *a > 0.6), "{without:?}");
    // What a bundle is needed for is named.
    let codes = dir.path().join("c.scdd");
    std::fs::write(&codes, b"not read").unwrap();
    let out = common::scdd(&["evaluate", &s(&codes), "--test", &s(&test), "--evaluators", "lr"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give it with --model"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = common::scdd(&["evaluate", &s(&train), "--test", &s(&test), "--evaluators", "default,lr", "--label", "cell_type"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the default evaluator needs a generator bundle"), "{}", String::from_utf8_lossy(&out.stderr));
}
