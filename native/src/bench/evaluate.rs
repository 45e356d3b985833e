//! `scdd bench evaluate`: the evaluator plugins' cost and fidelity.
//!
//! 1. For each split (a `scdd split` output directory): the `celltypist` plugin against the real
//!    CellTypist 1.7.1 (`celltypist.train` + `celltypist.annotate`, its own venv made by
//!    `scripts/celltypist-venv.sh`), both on the same log-normalised matrices: test accuracy
//!    and training time (scdd: the whole worker run — job files, process start, fit and
//!    predict; CellTypist: `train` alone).
//! 2. The time of one fit + predict of each plugin on 100 and on 10 000 training cells (drawn
//!    from the first split's training set, with replacement when it has fewer), 500 test cells.
use crate::error::{bail, Context, Result};
use crate::evaluate::host::resolve;
use crate::evaluate::worker::{run_in_worker, self_worker, PluginJob};
use crate::evaluate::EvaluatorSpec;
use crate::io::fs;
use crate::io::h5ad::ReadOptions;
use crate::io::prep;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SCRIPT: &str = include_str!("celltypist_reference.py");

#[derive(Clone, Debug)]
pub struct EvalBenchParams {
    /// `scdd split` output directories (train.h5ad, test.h5ad, split.json).
    pub splits: Vec<PathBuf>,
    /// The Python with celltypist 1.7.1 (default `<workspace>/.venv-celltypist/bin/python`).
    pub celltypist_python: Option<PathBuf>,
    /// Plugins whose fit time is measured.
    pub plugins: Vec<String>,
    /// Training-set sizes for the fit times.
    pub sizes: Vec<usize>,
    /// Timed runs of each side per split (the fastest is reported).
    pub runs: usize,
    /// Scratch space.
    pub dir: PathBuf,
    pub json: Option<PathBuf>,
}

/// One split: scdd's celltypist plugin against CellTypist.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FidelityRow {
    pub split: String,
    pub n_train: usize,
    pub n_test: usize,
    pub n_genes: usize,
    pub scdd_accuracy: f64,
    pub celltypist_accuracy: f64,
    /// Fraction of test cells both call the same.
    pub agreement: f64,
    /// The whole worker run: job files, process start, fit and predict.
    pub scdd_seconds: f64,
    /// Inside the plugin: create + fit (what CellTypist's `train` time compares with).
    pub scdd_fit_seconds: f64,
    pub celltypist_train_seconds: f64,
    /// CellTypist's training time ÷ scdd's fit time.
    pub speedup: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FitTimeRow {
    pub plugin: String,
    pub n_train: usize,
    pub n_genes: usize,
    /// The whole worker run.
    pub seconds: f64,
    /// Inside the plugin: create + fit.
    pub fit_seconds: f64,
}

#[derive(Serialize)]
struct Report<'a> {
    fidelity: &'a [FidelityRow],
    fit_times: &'a [FitTimeRow],
}

#[derive(Deserialize)]
struct CelltypistOut {
    predicted: Vec<String>,
    train_seconds: f64,
}

/// A split as dense log-normalised matrices over the training set's genes.
struct SplitData {
    name: String,
    genes: Vec<String>,
    classes: Vec<String>,
    train: Array2<f32>,
    train_labels: Vec<u32>,
    test: Array2<f32>,
    test_labels: Vec<u32>,
}

fn load_split(dir: &Path) -> Result<SplitData> {
    let summary = crate::split::read_summary(&dir.join("split.json"))?;
    let label = summary.label.clone();
    let train = crate::foundation::data::load_training_data(&dir.join("train.h5ad"), &ReadOptions::default(), Some(&label), 0)?;
    let (_, ids, classes) = train.labels.clone().context("the split names no label")?;
    let rows: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].is_some()).collect();
    let train_labels = rows.iter().map(|&i| ids[i].unwrap()).collect();
    let train_x = train.x.dense_rows(&rows);
    let test_path = dir.join("test.h5ad");
    let test_in = prep::load_model_input(&test_path, &ReadOptions::default(), &train.genes, &Default::default())?;
    let tids = prep::labels_for_classes(&test_in.data, &label, &classes, &test_path.display().to_string())?;
    let trows: Vec<usize> = (0..tids.len()).filter(|&i| tids[i].is_some()).collect();
    let test_labels = trows.iter().map(|&i| tids[i].unwrap()).collect();
    // Named by the file it was split from.
    let name = Path::new(&summary.input)
        .file_stem()
        .or_else(|| dir.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(SplitData { name, genes: train.genes, classes, train: train_x, train_labels, test: test_in.data.x.dense_rows(&trows), test_labels })
}

fn plugin_path(spec: &EvaluatorSpec) -> Result<PathBuf> {
    match spec {
        EvaluatorSpec::Plugin(p) if p.refused.is_none() && p.python.is_none() => Ok(p.path.clone()),
        EvaluatorSpec::Plugin(p) => bail!("plugin {}: {}", p.name, p.refused.as_deref().unwrap_or("not a shared-library plugin")),
        EvaluatorSpec::BuiltIn(k) => bail!("{} is built in, not a plugin", k.name()),
    }
}

/// One worker run; returns the predictions, the wall time and the plugin's fit time.
fn timed_run(plugin: &Path, d: &SplitData, train: &Array2<f32>, labels: &[u32], test: &Array2<f32>) -> Result<(Vec<u32>, f64, f64)> {
    let (tr, te): (Vec<f32>, Vec<f32>) = (train.iter().copied().collect(), test.iter().copied().collect());
    let job = PluginJob { config_json: "{}", seed: 0, class_names: &d.classes, genes: &d.genes, train: &tr, labels, test: &te, log1p: true };
    let t = Instant::now();
    let p = run_in_worker(&self_worker().map_err(crate::Error::msg)?, plugin, &job, Duration::from_secs(24 * 3600)).map_err(crate::Error::msg)?;
    let wall = t.elapsed().as_secs_f64();
    Ok((p.labels, wall, p.fit_seconds.unwrap_or(wall)))
}

fn accuracy(pred: &[u32], truth: &[u32]) -> f64 {
    pred.iter().zip(truth).filter(|(a, b)| a == b).count() as f64 / truth.len().max(1) as f64
}

pub fn run(p: EvalBenchParams) -> Result<()> {
    if p.splits.is_empty() {
        bail!("--splits: give at least one `scdd split` output directory");
    }
    if p.sizes.iter().any(|&s| s == 0 || s > 10_000_000) {
        bail!("--sizes: each between 1 and 10000000");
    }
    if !(1..=100).contains(&p.runs) {
        bail!("--runs {}: must be between 1 and 100", p.runs);
    }
    let py = p.celltypist_python.clone().unwrap_or_else(|| super::workspace_root().join(".venv-celltypist/bin/python"));
    if !py.exists() {
        bail!("{}: no Python with celltypist 1.7.1 (run scripts/celltypist-venv.sh, or give --celltypist-python)", py.display());
    }
    let specs = resolve(&p.plugins, &Default::default())?;
    let celltypist = resolve(&["celltypist".to_string()], &Default::default())?;
    let ct_path = plugin_path(&celltypist[0])?;
    std::fs::create_dir_all(&p.dir).with_context(|| format!("{}: cannot create", p.dir.display()))?;
    let script = p.dir.join("celltypist_reference.py");
    fs::write_atomic(&script, SCRIPT.as_bytes())?;

    let mut fidelity = Vec::new();
    let mut first: Option<SplitData> = None;
    for dir in &p.splits {
        let d = load_split(dir).with_context(|| format!("split {}", dir.display()))?;
        eprintln!("{}: {} training and {} test cells × {} genes", d.name, d.train.nrows(), d.test.nrows(), d.genes.len());
        let (ours, mut secs, mut fit_secs) = timed_run(&ct_path, &d, &d.train, &d.train_labels, &d.test)?;
        for _ in 1..p.runs {
            let (again, s, f) = timed_run(&ct_path, &d, &d.train, &d.train_labels, &d.test)?;
            if again != ours {
                bail!("{}: the celltypist plugin predicted differently on a second run with the same seed", d.name);
            }
            (secs, fit_secs) = (secs.min(s), fit_secs.min(f));
        }
        // The same matrices for CellTypist.
        let work = p.dir.join(&d.name);
        std::fs::create_dir_all(&work)?;
        let bytes = |a: &Array2<f32>| a.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
        fs::write_atomic(&work.join("train.f32"), &bytes(&d.train))?;
        fs::write_atomic(&work.join("test.f32"), &bytes(&d.test))?;
        let names = |ids: &[u32]| ids.iter().map(|&c| d.classes[c as usize].clone()).collect::<Vec<_>>();
        let meta = serde_json::json!({ "genes": d.genes, "train_labels": names(&d.train_labels), "n_train": d.train.nrows(), "n_test": d.test.nrows() });
        fs::write_json(&work.join("meta.json"), &meta)?;
        eprintln!("{}: CellTypist 1.7.1 ...", d.name);
        let st = Command::new(&py).arg(&script).arg(&work).arg(p.runs.to_string()).status().with_context(|| format!("starting {}", py.display()))?;
        if !st.success() {
            bail!("{}: the CellTypist side failed ({st})", d.name);
        }
        let out: CelltypistOut = serde_json::from_slice(&fs::read(&work.join("out.json"))?).context("reading CellTypist's results")?;
        let theirs: Vec<u32> = out.predicted.iter().map(|n| d.classes.iter().position(|c| c == n).map(|i| i as u32).unwrap_or(u32::MAX)).collect();
        let row = FidelityRow {
            split: d.name.clone(),
            n_train: d.train.nrows(),
            n_test: d.test.nrows(),
            n_genes: d.genes.len(),
            scdd_accuracy: accuracy(&ours, &d.test_labels),
            celltypist_accuracy: accuracy(&theirs, &d.test_labels),
            agreement: accuracy(&ours, &theirs),
            scdd_seconds: secs,
            scdd_fit_seconds: fit_secs,
            celltypist_train_seconds: out.train_seconds,
            speedup: out.train_seconds / fit_secs.max(1e-9),
        };
        eprintln!("{}: scdd {:.4} in {:.1} s, CellTypist {:.4} in {:.1} s", d.name, row.scdd_accuracy, secs, row.celltypist_accuracy, out.train_seconds);
        fidelity.push(row);
        if first.is_none() {
            first = Some(d);
        }
    }

    // Fit times at fixed sizes on the first split's cells.
    let d = first.expect("at least one split");
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let test_rows: Vec<usize> = (0..d.test.nrows().min(500)).collect();
    let test = d.test.select(ndarray::Axis(0), &test_rows);
    let mut fit_times = Vec::new();
    for &n in &p.sizes {
        let rows: Vec<usize> = if n <= d.train.nrows() {
            rand::seq::index::sample(&mut rng, d.train.nrows(), n).into_vec()
        } else {
            (0..n).map(|_| rng.gen_range(0..d.train.nrows())).collect()
        };
        let x = d.train.select(ndarray::Axis(0), &rows);
        let labels: Vec<u32> = rows.iter().map(|&i| d.train_labels[i]).collect();
        for spec in &specs {
            let (_, secs, fit_secs) = timed_run(&plugin_path(spec)?, &d, &x, &labels, &test)?;
            eprintln!("{} on {n} cells: fit {fit_secs:.2} s, worker {secs:.1} s", spec.name());
            fit_times.push(FitTimeRow { plugin: spec.name().to_string(), n_train: n, n_genes: d.genes.len(), seconds: secs, fit_seconds: fit_secs });
        }
    }

    println!("celltypist plugin vs CellTypist 1.7.1 (same splits, same log-normalised matrices; times: the fastest of {} runs)\n", p.runs);
    println!("| split | train × genes | test | scdd acc % | CellTypist acc % | Δ points | same call % | scdd fit s | scdd worker s | CellTypist train s | speed-up (fit) |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &fidelity {
        println!(
            "| {} | {} × {} | {} | {:.2} | {:.2} | {:+.2} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1}× |",
            r.split,
            r.n_train,
            r.n_genes,
            r.n_test,
            100.0 * r.scdd_accuracy,
            100.0 * r.celltypist_accuracy,
            100.0 * (r.scdd_accuracy - r.celltypist_accuracy),
            100.0 * r.agreement,
            r.scdd_fit_seconds,
            r.scdd_seconds,
            r.celltypist_train_seconds,
            r.speedup
        );
    }
    println!("\nOne fit (inside the plugin; in brackets the whole worker run with 500 test cells), {} genes of {}\n", d.genes.len(), d.name);
    print!("| plugin |");
    for n in &p.sizes {
        print!(" {n} cells |");
    }
    println!("\n|---|{}", "---:|".repeat(p.sizes.len()));
    for spec in &specs {
        print!("| {} |", spec.name());
        for &n in &p.sizes {
            match fit_times.iter().find(|r| r.plugin == spec.name() && r.n_train == n) {
                Some(r) => print!(" {:.2} s ({:.1} s) |", r.fit_seconds, r.seconds),
                None => print!(" – |"),
            }
        }
        println!();
    }
    if let Some(j) = &p.json {
        fs::write_json(j, &Report { fidelity: &fidelity, fit_times: &fit_times })?;
    }
    Ok(())
}
