//! The pipeline's report in `out_dir/report/`: `report.md` (the paper's Table II layout:
//! methods × datasets/SPC, accuracy mean ± std, compression ratio, ratio to full-data accuracy,
//! macro-F1), `report.json` (everything, including per-class accuracy and stage timings) and
//! SVG plots per dataset:
//!
//! * `embedding_<dataset>_spc<k>.svg` — PCA of the frozen encoder's features of the real test
//!   cells, coloured by class, with the main method's synthetic cells as stars (Fig. 6);
//! * `loss_<dataset>.svg` — loss curves of the optimising methods;
//! * `heatmap_<dataset>.svg` — top marker genes per class, class means of the original
//!   training cells next to those of the synthetic cells (Fig. 5);
//! * `accuracy_<dataset>.svg` — accuracy by method and SPC with error bars.
pub mod inputs;
pub mod plot;

pub use inputs::{fmt_secs, DatasetInfo, DatasetRun, MethodRun, ReportConfig, ReportSection, StageRecord};

use crate::distill::{Method, RunLog};
use crate::evaluate::input::{model_matrix, read_eval, read_test_features, synthetic_matrix};
use crate::evaluate::{EvalResults, EvalSummary, EvaluatorKind, HEADLINE};
use crate::io::artifacts::load_bundle;
use crate::io::fs;
use crate::error::{Context, Result};
use ndarray::{Array2, Axis};
use scdd_core::reference::CpuModel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A method's name in tables (the paper's names where they exist).
pub fn method_label(m: Method) -> &'static str {
    match m {
        Method::DmDc => "scDD (DM+DC)",
        Method::Dm => "scDD (DM)",
        Method::Dc => "scDD (DC)",
        Method::None => "scDD init (no matching)",
        Method::Random => "Random real cells",
        Method::ClassMean => "Class-mean cells",
        Method::DmData => "DM (gene level)",
        Method::DcData => "DC (gene level)",
    }
}

pub const FULL_LABEL: &str = "Full training set";

/// One evaluator's score of a training set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Score {
    pub evaluator: String,
    pub repeats: usize,
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    pub macro_f1_mean: f64,
    pub macro_f1_std: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Score {
    fn of(s: &EvalSummary) -> Self {
        Score {
            evaluator: s.evaluator.clone(),
            repeats: s.repeats,
            accuracy_mean: s.accuracy_mean,
            accuracy_std: s.accuracy_std,
            macro_f1_mean: s.macro_f1_mean,
            macro_f1_std: s.macro_f1_std,
            warnings: s.warnings.clone(),
        }
    }
}

/// One row of a results table for one dataset and SPC. The top-level accuracy, F1 and
/// per-class figures are the headline's: the mean over the gene-space evaluators
/// (`evaluator` = `genes-mean`), or the only evaluator that ran.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResultEntry {
    /// `scdd distill --method` name, or `full`.
    pub method: String,
    pub label: String,
    /// None for the full training set.
    pub spc: Option<usize>,
    /// Cells the evaluator was trained on.
    pub n_cells: usize,
    /// Which evaluator the top-level figures are.
    pub evaluator: String,
    /// Every evaluator's score (the headline's parts and the paper's default).
    pub by_evaluator: Vec<Score>,
    /// Evaluators that failed on this set, with the reason.
    #[serde(default)]
    pub failures: BTreeMap<String, String>,
    /// Synthetic cells / training cells.
    pub compression_ratio: f64,
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    pub macro_f1_mean: f64,
    pub macro_f1_std: f64,
    /// accuracy_mean / full-training-set accuracy_mean.
    pub ratio_to_full: Option<f64>,
    pub accuracies: Vec<f64>,
    /// Class → recall on the test set (null: class absent from the test set).
    pub per_class_accuracy: BTreeMap<String, Option<f64>>,
    pub final_loss: Option<f64>,
    pub distill_steps: Option<usize>,
    pub distill_seconds: Option<f64>,
    /// Size of what would be shared: the `.scdd` code file (decoded with the generator bundle)
    /// or, for cell baselines, the synthetic `.h5ad`.
    #[serde(default)]
    pub output_bytes: Option<u64>,
    /// Whether the synthetic cells are valid cells of the space.
    #[serde(default)]
    pub validity: Option<Validity>,
    pub files: BTreeMap<String, String>,
}

/// How far synthetic cells are from valid cells of the expression space.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Validity {
    /// Fraction of values below 0 or above the space's largest value (log1p(1e4) = 9.21).
    pub out_of_range: f64,
    /// Median over cells of |Σ expm1(x) / target_sum − 1| (0: every cell sums to the target).
    pub sum_deviation: f64,
    pub max_value: f64,
}

/// [`Validity`] of log-normalised cells `x` in `space`.
pub fn validity(x: &Array2<f32>, space: &scdd_core::graph::ExpressionSpace) -> Validity {
    let hi = space.max_value() as f64 + 1e-4;
    let total = x.len().max(1) as f64;
    let out = x.iter().filter(|&&v| (v as f64) < 0.0 || (v as f64) > hi).count() as f64 / total;
    let mut dev: Vec<f64> = x
        .rows()
        .into_iter()
        .map(|r| {
            let sum: f64 = r.iter().map(|&v| if space.log1p { (v as f64).exp_m1() } else { v as f64 }).sum();
            (sum / space.target_sum as f64 - 1.0).abs()
        })
        .collect();
    dev.sort_by(f64::total_cmp);
    let sum_deviation = if dev.is_empty() { 0.0 } else { dev[dev.len() / 2] };
    Validity { out_of_range: out, sum_deviation, max_value: x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64 }
}

/// The foundation autoencoder's training report (`OUT.report.json` next to its bundle), if any.
fn foundation_report(foundation: &Path) -> Option<crate::foundation::FoundationReport> {
    #[derive(Deserialize)]
    struct File {
        report: crate::foundation::FoundationReport,
    }
    let text = std::fs::read(crate::foundation::data::report_path(foundation)).ok()?;
    serde_json::from_slice::<File>(&text).ok().map(|f| f.report)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetReport {
    pub name: String,
    pub path: String,
    pub label: String,
    pub n_train: usize,
    pub n_test: usize,
    /// Size of the training split's `.h5ad` (what the distilled files replace).
    #[serde(default)]
    pub train_bytes: Option<u64>,
    pub classes: Vec<String>,
    /// Training cells per class (in `classes` order).
    pub train_per_class: Vec<usize>,
    pub results: Vec<ResultEntry>,
    pub full: Option<ResultEntry>,
    /// Heatmap rows: (gene, class it marks).
    pub marker_genes: Vec<(String, String)>,
    pub plots: Vec<String>,
    pub generator: String,
    /// The foundation's training report: held-out reconstruction, epochs.
    #[serde(default)]
    pub foundation: Option<crate::foundation::FoundationReport>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReportJson {
    pub scdd_version: String,
    pub created: String,
    pub out_dir: String,
    pub seed: u64,
    pub device: String,
    pub evaluator: BTreeMap<String, String>,
    pub methods: Vec<String>,
    pub spc: Vec<usize>,
    pub main_method: String,
    pub datasets: Vec<DatasetReport>,
    /// Every stage of this invocation: ran now or reused, with the wall time of the run that
    /// produced it.
    pub stages: Vec<StageRecord>,
    pub config: serde_json::Value,
}

/// Renders the report into `dir` (replacing what was there); returns the accuracy table.
pub fn write_report(cfg: &ReportConfig, datasets: &[DatasetRun], stages: &[StageRecord], dir: &Path) -> Result<String> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let name = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "report".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    let result = render(cfg, datasets, stages, &tmp);
    match result {
        Ok(table) => {
            if dir.exists() {
                std::fs::remove_dir_all(dir).with_context(|| format!("{}: cannot replace", dir.display()))?;
            }
            std::fs::rename(&tmp, dir).with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
            Ok(table)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn render(cfg: &ReportConfig, datasets: &[DatasetRun], stages: &[StageRecord], out: &Path) -> Result<String> {
    let main = cfg.main;
    let mut reports = Vec::new();
    for d in datasets {
        let r = dataset_report(cfg, d, main, out).with_context(|| format!("report for dataset {}", d.entry.name))?;
        reports.push(r);
    }
    let sgd_steps = cfg.evaluate.steps;
    let evaluator = BTreeMap::from([
        ("name".to_string(), "frozen foundation encoder + linear head (SGD)".to_string()),
        ("repeats".to_string(), cfg.evaluate.repeats.to_string()),
        ("sgd_steps".to_string(), sgd_steps.to_string()),
        ("lr".to_string(), cfg.evaluate.lr.to_string()),
    ]);
    let json = ReportJson {
        scdd_version: scdd_core::SCDD_VERSION.into(),
        created: fs::now_rfc3339(),
        out_dir: cfg.out_dir.display().to_string(),
        seed: cfg.seed,
        device: cfg.device.clone(),
        evaluator,
        methods: cfg.methods.iter().map(|m| m.name().to_string()).collect(),
        spc: cfg.spc.clone(),
        main_method: main.name().into(),
        datasets: reports,
        stages: stages.to_vec(),
        config: cfg.config.clone(),
    };
    fs::write_json(&out.join("report.json"), &json)?;
    let md = markdown(&json, cfg)?;
    fs::write_atomic(&out.join("report.md"), md.as_bytes())?;
    accuracy_table(&json, cfg)
}

fn entry_from(
    method: &str,
    label: &str,
    spc: Option<usize>,
    r: &EvalResults,
    n_train: usize,
    full_acc: Option<f64>,
) -> ResultEntry {
    let s = &r.headline().or_else(|| r.results.first().cloned()).expect("an eval.json holds at least one evaluator");
    ResultEntry {
        evaluator: s.evaluator.clone(),
        by_evaluator: r.results.iter().chain(r.headline().as_ref()).map(Score::of).collect(),
        failures: r.failures.iter().map(|f| (f.evaluator.clone(), f.error.clone())).collect(),
        method: method.into(),
        label: label.into(),
        spc,
        n_cells: s.n_train,
        compression_ratio: s.n_train as f64 / n_train.max(1) as f64,
        accuracy_mean: s.accuracy_mean,
        accuracy_std: s.accuracy_std,
        macro_f1_mean: s.macro_f1_mean,
        macro_f1_std: s.macro_f1_std,
        ratio_to_full: full_acc.filter(|f| *f > 0.0).map(|f| s.accuracy_mean / f),
        accuracies: s.accuracies.clone(),
        per_class_accuracy: s
            .classes
            .iter()
            .zip(&s.per_class_accuracy)
            .map(|(c, a)| (c.clone(), a.is_finite().then_some(*a)))
            .collect(),
        final_loss: None,
        distill_steps: None,
        distill_seconds: None,
        output_bytes: None,
        validity: None,
        files: BTreeMap::new(),
    }
}

fn dataset_report(cfg: &ReportConfig, d: &DatasetRun, main: Method, out: &Path) -> Result<DatasetReport> {
    let name = &d.entry.name;
    let label = &d.entry.label;
    let split = crate::split::read_summary(&d.split_json)?;
    let (n_train, n_test) = (split.n_train, split.n_test);
    let bundle = load_bundle(&d.generator)?;
    let classes = bundle.classes.clone();
    let per_class: BTreeMap<&str, usize> = split.classes.iter().map(|c| (c.name.as_str(), c.train)).collect();
    let train_per_class = classes.iter().map(|c| per_class.get(c.as_str()).copied().unwrap_or(0)).collect();

    let full = match &d.full_eval {
        Some(p) => {
                let s = read_eval(p)?;
            let mut e = entry_from("full", FULL_LABEL, None, &s, n_train, None);
            e.ratio_to_full = Some(1.0);
            e.files.insert("eval".into(), p.display().to_string());
            Some(e)
        }
        None => None,
    };
    let full_acc = full.as_ref().map(|f| f.accuracy_mean);
    let mut results = Vec::new();
    let mut logs: Vec<(Method, usize, RunLog)> = Vec::new();
    for r in &d.runs {
        let s = read_eval(&r.eval)?;
        let mut e = entry_from(r.method.name(), method_label(r.method), Some(r.spc), &s, n_train, full_acc);
        if let Ok(bytes) = std::fs::read(&r.log) {
            if let Ok(log) = serde_json::from_slice::<RunLog>(&bytes) {
                e.final_loss = log.history.last().map(|h| h.loss);
                e.distill_steps = Some(log.history.len());
                e.distill_seconds = Some(log.optimise_s + log.feature_pass_s);
                logs.push((r.method, r.spc, log));
            }
        }
        e.output_bytes = std::fs::metadata(&r.distill_out).ok().map(|m| m.len());
        if let Ok((x, _)) = synthetic_matrix(&r.cells, &bundle, label) {
            e.validity = Some(validity(&x, &bundle.spec.space));
        }
        e.files.insert("distilled".into(), r.distill_out.display().to_string());
        e.files.insert("cells".into(), r.cells.display().to_string());
        e.files.insert("eval".into(), r.eval.display().to_string());
        results.push(e);
    }

    let mut plots = Vec::new();
    // Accuracy bars.
    let spcs = &cfg.spc;
    let series: Vec<plot::BarSeries> = cfg
        .methods
        .iter()
        .map(|m| {
            let vals = spcs
                .iter()
                .map(|&k| {
                    results
                        .iter()
                        .find(|e| e.method == m.name() && e.spc == Some(k))
                        .map(|e| (100.0 * e.accuracy_mean, 100.0 * e.accuracy_std))
                })
                .collect();
            (method_label(*m).to_string(), vals)
        })
        .collect();
    let groups: Vec<String> = spcs.iter().map(|k| format!("SPC {k}")).collect();
    let file = format!("accuracy_{name}.svg");
    plot::bars(
        &out.join(&file),
        &format!("{name}: test accuracy by method (mean ± std over {} evaluators)", cfg.evaluate.repeats),
        "accuracy (%)",
        &groups,
        &series,
        full.as_ref().map(|f| (FULL_LABEL, 100.0 * f.accuracy_mean, 100.0 * f.accuracy_std)),
        100.0,
    )?;
    plots.push(file);

    // Across architectures: one group per evaluator, one bar per method (and the full set).
    let evaluators = entry_evaluators(results.iter().chain(full.iter()));
    if evaluators.len() > 2 {
        for &k in spcs {
            let mut series: Vec<plot::BarSeries> = cfg
                .methods
                .iter()
                .map(|m| {
                    let e = results.iter().find(|e| e.method == m.name() && e.spc == Some(k));
                    let vals = evaluators
                        .iter()
                        .map(|ev| e.and_then(|e| score(e, ev)).map(|x| (100.0 * x.accuracy_mean, 100.0 * x.accuracy_std)))
                        .collect();
                    (method_label(*m).to_string(), vals)
                })
                .collect();
            if let Some(f) = &full {
                let vals = evaluators.iter().map(|ev| score(f, ev).map(|x| (100.0 * x.accuracy_mean, 100.0 * x.accuracy_std))).collect();
                series.push((FULL_LABEL.to_string(), vals));
            }
            let file = format!("architectures_{name}_spc{k}.svg");
            plot::bars(
                &out.join(&file),
                &format!("{name}, SPC {k}: test accuracy by evaluator (mean ± std over seeds)"),
                "accuracy (%)",
                &evaluators,
                &series,
                None,
                100.0,
            )?;
            plots.push(file);
        }
    }

    // Loss curves.
    let curves: Vec<plot::Series> = logs
        .iter()
        .filter(|(_, _, l)| !l.history.is_empty())
        .map(|(m, k, l)| plot::Series {
            name: format!("{} SPC {k}", method_label(*m)),
            points: l.history.iter().map(|h| (h.step as f64, h.loss)).collect(),
        })
        .collect();
    if !curves.is_empty() {
        let file = format!("loss_{name}.svg");
        plot::lines(
            &out.join(&file),
            &format!("{name}: distillation loss (each term divided by its value at step 0)"),
            ("step", "loss"),
            &curves,
        )?;
        plots.push(file);
    }

    // Embedding of the real test cells with the main method's synthetic cells.
    let model = CpuModel::from_bundle(&bundle)?;
    let (test, meta) = read_test_features(&d.test_features)?;
    let test_features = test.features.context("stored test features")?;
    let (mean, comps) = pca2(&test_features);
    let project = |f: &Array2<f32>| -> Vec<(f64, f64)> {
        f.rows()
            .into_iter()
            .map(|r| {
                let c: Vec<f64> = r.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect();
                (dot(&c, &comps[0]), dot(&c, &comps[1]))
            })
            .collect()
    };
    let step = (test_features.nrows() / cfg.report.max_embedding_cells.max(1)).max(1);
    let real: Vec<(f64, f64, u32)> = project(&test_features)
        .into_iter()
        .zip(&meta.labels)
        .step_by(step)
        .map(|((x, y), &c)| (x, y, c))
        .collect();
    let main_runs: Vec<_> = d.runs.iter().filter(|r| r.method == main).collect();
    let mut synth_means: Vec<(usize, Array2<f64>)> = Vec::new();
    let (train_x, train_labels) = model_matrix(&d.train, &bundle, label)?;
    for r in &main_runs {
        let (x, labels) = synthetic_matrix(&r.cells, &bundle, label)?;
        let feats = model.encode(x.clone())?;
        let syn: Vec<(f64, f64, u32)> = project(&feats).into_iter().zip(&labels).map(|((a, b), &c)| (a, b, c)).collect();
        let file = format!("embedding_{name}_spc{}.svg", r.spc);
        plot::embedding(
            &out.join(&file),
            &format!("{name}: test cells (PCA of encoder features) and {} synthetic cells, SPC {}", method_label(main), r.spc),
            ("PC 1", "PC 2"),
            &classes,
            &real,
            &syn,
            &format!("{} SPC {}", method_label(main), r.spc),
        )?;
        plots.push(file);
        synth_means.push((r.spc, class_means(&x, &labels, classes.len())));
    }

    // Heatmap of marker genes.
    let orig = class_means(&train_x, &train_labels, classes.len());
    let markers = marker_genes(&orig, cfg.report.genes_per_class);
    let genes: Vec<String> = markers.iter().map(|&(g, _)| bundle.genes[g].clone()).collect();
    let groups: Vec<usize> = markers.iter().map(|&(_, c)| c).collect();
    let panel = |m: &Array2<f64>| -> Vec<Vec<f64>> {
        markers.iter().map(|&(g, _)| (0..classes.len()).map(|c| m[[c, g]]).collect()).collect()
    };
    let mut panels = vec![(format!("original training cells (n = {})", train_x.nrows()), panel(&orig))];
    for (k, m) in &synth_means {
        panels.push((format!("{} SPC {k}", method_label(main)), panel(m)));
    }
    let file = format!("heatmap_{name}.svg");
    plot::heatmap(
        &out.join(&file),
        &format!("{name}: top {} marker genes per class — class means, original vs synthetic", cfg.report.genes_per_class),
        &genes,
        &groups,
        &classes,
        &panels,
        "log1p expr.",
    )?;
    plots.push(file);

    Ok(DatasetReport {
        name: name.clone(),
        path: d.entry.path.display().to_string(),
        label: label.clone(),
        n_train,
        n_test,
        train_bytes: std::fs::metadata(&d.train).ok().map(|m| m.len()),
        classes: classes.clone(),
        train_per_class,
        results,
        full,
        marker_genes: markers.iter().map(|&(g, c)| (bundle.genes[g].clone(), classes[c].clone())).collect(),
        plots,
        generator: d.generator.display().to_string(),
        foundation: foundation_report(&d.foundation),
    })
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Class means `[class, gene]` (NaN rows for classes without cells).
pub fn class_means(x: &Array2<f32>, labels: &[u32], n_classes: usize) -> Array2<f64> {
    let mut sum = Array2::<f64>::zeros((n_classes, x.ncols()));
    let mut n = vec![0usize; n_classes];
    for (row, &c) in x.rows().into_iter().zip(labels) {
        n[c as usize] += 1;
        let mut s = sum.row_mut(c as usize);
        for (a, &v) in s.iter_mut().zip(row.iter()) {
            *a += v as f64;
        }
    }
    for (c, mut row) in sum.axis_iter_mut(Axis(0)).enumerate() {
        if n[c] == 0 {
            row.fill(f64::NAN);
        } else {
            row /= n[c] as f64;
        }
    }
    sum
}

/// Top `k` genes per class by (class mean − mean of the other classes' means), each gene used
/// once; returns (gene index, class) in class order.
pub fn marker_genes(means: &Array2<f64>, k: usize) -> Vec<(usize, usize)> {
    let (n_classes, n_genes) = means.dim();
    let present: Vec<usize> = (0..n_classes).filter(|&c| means[[c, 0]].is_finite()).collect();
    let mut used = vec![false; n_genes];
    let mut out = Vec::new();
    for &c in &present {
        let others: Vec<usize> = present.iter().copied().filter(|&o| o != c).collect();
        let mut scored: Vec<(f64, usize)> = (0..n_genes)
            .map(|g| {
                let rest = if others.is_empty() { 0.0 } else { others.iter().map(|&o| means[[o, g]]).sum::<f64>() / others.len() as f64 };
                (means[[c, g]] - rest, g)
            })
            .collect();
        scored.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal).then(a.1.cmp(&b.1)));
        let mut taken = 0;
        for (_, g) in scored {
            if taken == k {
                break;
            }
            if !used[g] {
                used[g] = true;
                out.push((g, c));
                taken += 1;
            }
        }
    }
    out
}

/// The mean and the two leading principal axes of the rows of `x` (covariance power iteration
/// with deflation; axes have unit length, the sign makes the largest entry positive).
pub fn pca2(x: &Array2<f32>) -> (Vec<f64>, [Vec<f64>; 2]) {
    let (n, d) = x.dim();
    let mut mean = vec![0.0; d];
    for r in x.rows() {
        for (m, &v) in mean.iter_mut().zip(r.iter()) {
            *m += v as f64;
        }
    }
    for m in &mut mean {
        *m /= n.max(1) as f64;
    }
    let mut cov = Array2::<f64>::zeros((d, d));
    for r in x.rows() {
        let c: Vec<f64> = r.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect();
        for i in 0..d {
            if c[i] == 0.0 {
                continue;
            }
            for j in 0..d {
                cov[[i, j]] += c[i] * c[j];
            }
        }
    }
    let mut axes: Vec<Vec<f64>> = Vec::new();
    for k in 0..2 {
        let mut v: Vec<f64> = (0..d).map(|i| 1.0 + ((i * 7 + k * 3) % 11) as f64 / 11.0).collect();
        for _ in 0..500 {
            let mut w: Vec<f64> = (0..d).map(|i| (0..d).map(|j| cov[[i, j]] * v[j]).sum()).collect();
            for a in &axes {
                let p = dot(&w, a);
                for (wi, ai) in w.iter_mut().zip(a) {
                    *wi -= p * ai;
                }
            }
            let norm = dot(&w, &w).sqrt();
            if norm < 1e-300 {
                // No variance left: any unit vector orthogonal to the previous axes.
                w = (0..d).map(|i| if i == k { 1.0 } else { 0.0 }).collect();
                for a in &axes {
                    let p = dot(&w, a);
                    for (wi, ai) in w.iter_mut().zip(a) {
                        *wi -= p * ai;
                    }
                }
                let nn = dot(&w, &w).sqrt().max(1e-300);
                v = w.iter().map(|x| x / nn).collect();
                break;
            }
            let next: Vec<f64> = w.iter().map(|x| x / norm).collect();
            let diff: f64 = next.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
            v = next;
            if diff < 1e-12 {
                break;
            }
        }
        let big = v.iter().copied().fold(0.0f64, |a, b| if b.abs() > a.abs() { b } else { a });
        if big < 0.0 {
            v.iter_mut().for_each(|x| *x = -*x);
        }
        axes.push(v);
    }
    let b = axes.pop().unwrap();
    let a = axes.pop().unwrap();
    (mean, [a, b])
}

fn pct(v: f64) -> String {
    format!("{:.2}", 100.0 * v)
}

/// A ratio as a percentage with three significant digits.
pub fn ratio_pct(r: f64) -> String {
    let p = 100.0 * r;
    if p >= 10.0 {
        format!("{p:.1} %")
    } else if p >= 1.0 {
        format!("{p:.2} %")
    } else {
        format!("{p:.3} %")
    }
}

/// Table rows in display order: the configured methods, then the full training set.
fn table<F>(json: &ReportJson, cfg: &ReportConfig, cell: F) -> Result<String>
where
    F: Fn(&ResultEntry, &ResultEntry) -> String,
{
    let methods = &cfg.methods;
    let cols: Vec<(&DatasetReport, usize)> = json.datasets.iter().flat_map(|d| cfg.spc.iter().map(move |&k| (d, k))).collect();
    let mut s = String::new();
    write!(s, "| Method |")?;
    for (d, k) in &cols {
        write!(s, " {} · SPC {k} |", d.name)?;
    }
    writeln!(s)?;
    write!(s, "|---|")?;
    for _ in &cols {
        write!(s, "---:|")?;
    }
    writeln!(s)?;
    write!(s, "| *Compression ratio* |")?;
    for (d, k) in &cols {
        let r = (k * d.classes.len()) as f64 / d.n_train.max(1) as f64;
        write!(s, " *{}* |", ratio_pct(r))?;
    }
    writeln!(s)?;
    // The best synthetic method per column in bold.
    let best: Vec<Option<String>> = cols
        .iter()
        .map(|(d, k)| {
            d.results
                .iter()
                .filter(|e| e.spc == Some(*k))
                .max_by(|a, b| a.accuracy_mean.partial_cmp(&b.accuracy_mean).unwrap_or(std::cmp::Ordering::Equal))
                .map(|e| e.method.clone())
        })
        .collect();
    for m in methods {
        write!(s, "| {} |", method_label(*m))?;
        for ((d, k), b) in cols.iter().zip(&best) {
            match d.results.iter().find(|e| e.method == m.name() && e.spc == Some(*k)) {
                Some(e) => {
                    let full = d.full.clone().unwrap_or_else(|| e.clone());
                    let text = cell(e, &full);
                    if b.as_deref() == Some(m.name()) {
                        write!(s, " **{text}** |")?;
                    } else {
                        write!(s, " {text} |")?;
                    }
                }
                None => write!(s, " – |")?,
            }
        }
        writeln!(s)?;
    }
    if json.datasets.iter().any(|d| d.full.is_some()) {
        write!(s, "| {FULL_LABEL} |")?;
        for (d, _) in &cols {
            match &d.full {
                Some(f) => write!(s, " {} |", cell(f, f))?,
                None => write!(s, " – |")?,
            }
        }
        writeln!(s)?;
    }
    Ok(s)
}

/// The accuracy table (Table II layout): "mean ± std" in %.
pub fn accuracy_table(json: &ReportJson, cfg: &ReportConfig) -> Result<String> {
    table(json, cfg, |e, _| format!("{} ± {}", pct(e.accuracy_mean), pct(e.accuracy_std)))
}

fn score<'a>(e: &'a ResultEntry, evaluator: &str) -> Option<&'a Score> {
    e.by_evaluator.iter().find(|s| s.evaluator == evaluator)
}

/// Evaluators present in the results, in display order: the headline, its parts, the rest.
fn evaluators_in(json: &ReportJson) -> Vec<String> {
    entry_evaluators(json.datasets.iter().flat_map(|d| d.results.iter().chain(d.full.iter())))
}

/// Evaluators that ran or failed on `entries`, in display order: the headline, its parts, the
/// paper's default and the plugins in the order run.
fn entry_evaluators<'a>(entries: impl Iterator<Item = &'a ResultEntry>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for e in entries {
        for n in e.by_evaluator.iter().map(|s| &s.evaluator).chain(e.failures.keys()) {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let rank = |n: &String| match n.parse::<EvaluatorKind>() {
        _ if n == HEADLINE => 0,
        Ok(k) if k.gene_space() => 1,
        Ok(_) => 2,
        Err(_) => 3,
    };
    names.sort_by_key(|n| rank(n));
    names
}

/// How tables name an evaluator.
pub fn evaluator_label(name: &str) -> String {
    match name.parse::<EvaluatorKind>() {
        Ok(k) => k.label().to_string(),
        Err(_) if name == HEADLINE => "mean of gene-space evaluators".to_string(),
        Err(_) => name.to_string(),
    }
}

/// Averages over datasets, per method and SPC, for one evaluator: accuracy, accuracy relative
/// to the full training set, and the difference to the class-mean cells (in points).
pub fn average_table(json: &ReportJson, cfg: &ReportConfig, evaluator: &str) -> Result<String> {
    let mut s = String::new();
    write!(s, "| Method |")?;
    for k in &cfg.spc {
        write!(s, " SPC {k}: accuracy | ÷ full | − class mean |")?;
    }
    writeln!(s)?;
    writeln!(s, "|---|{}", "---:|---:|---:|".repeat(cfg.spc.len()))?;
    let acc = |d: &DatasetReport, method: &str, k: usize| -> Option<f64> {
        d.results.iter().find(|e| e.method == method && e.spc == Some(k)).and_then(|e| score(e, evaluator)).map(|x| x.accuracy_mean)
    };
    let full = |d: &DatasetReport| d.full.as_ref().and_then(|f| score(f, evaluator)).map(|x| x.accuracy_mean);
    let mean = |v: &[f64]| if v.is_empty() { None } else { Some(v.iter().sum::<f64>() / v.len() as f64) };
    for m in &cfg.methods {
        write!(s, "| {} |", method_label(*m))?;
        for &k in &cfg.spc {
            let a: Vec<f64> = json.datasets.iter().filter_map(|d| acc(d, m.name(), k)).collect();
            let r: Vec<f64> = json.datasets.iter().filter_map(|d| Some(acc(d, m.name(), k)? / full(d)?)).collect();
            let c: Vec<f64> =
                json.datasets.iter().filter_map(|d| Some(acc(d, m.name(), k)? - acc(d, Method::ClassMean.name(), k)?)).collect();
            let f = |v: Option<f64>, fmt: &dyn Fn(f64) -> String| v.map(fmt).unwrap_or_else(|| "–".into());
            write!(
                s,
                " {} | {} | {} |",
                f(mean(&a), &|v| pct(v)),
                f(mean(&r), &|v| format!("{:.3}", v)),
                f(mean(&c), &|v| format!("{:+.2}", 100.0 * v))
            )?;
        }
        writeln!(s)?;
    }
    let fa: Vec<f64> = json.datasets.iter().filter_map(full).collect();
    if let Some(v) = mean(&fa) {
        writeln!(s, "| {FULL_LABEL} |{}", format!(" {} | 1.000 | |", pct(v)).repeat(cfg.spc.len()))?;
    }
    Ok(s)
}

fn markdown(json: &ReportJson, cfg: &ReportConfig) -> Result<String> {
    let mut s = String::new();
    writeln!(s, "# scDD distillation report\n")?;
    writeln!(
        s,
        "scdd {} · {} · seed {} · device {} · output {}\n",
        json.scdd_version, json.created, json.seed, json.device, json.out_dir
    )?;
    let evaluators = evaluators_in(json);
    let headline = evaluators.first().cloned().unwrap_or_default();
    writeln!(
        s,
        "Each synthetic set trains classifiers that are tested on the real test split. Headline ({}): {}. \
         Evaluators: logistic regression on the log-normalised genes (no scaler, L2, C = 1; convex, so one fit), \
         an MLP on the genes (one hidden layer of 128 ReLU units, Adam; {} seeds), and the paper's default \
         — the frozen foundation encoder with one linear head trained by SGD ({} steps, lr {}; {} seeds), which reads \
         cells through the features the distillation matches and so flatters it. Accuracy mean ± std in %. \
         Compression ratio = synthetic cells / training cells. Bold: best synthetic set per column.\n",
        headline,
        evaluator_label(&headline),
        cfg.evaluate.repeats,
        cfg.evaluate.steps,
        cfg.evaluate.lr,
        cfg.evaluate.repeats
    )?;
    if json.datasets.len() > 1 {
        for ev in &evaluators {
            writeln!(s, "## Average over the {} datasets — {}\n", json.datasets.len(), evaluator_label(ev))?;
            s.push_str(&average_table(json, cfg, ev)?);
            writeln!(s)?;
        }
    }
    writeln!(s, "## Cell-type annotation accuracy (%) — {}\n", evaluator_label(&headline))?;
    s.push_str(&accuracy_table(json, cfg)?);
    writeln!(s, "\n## Accuracy relative to the full training set\n")?;
    s.push_str(&table(json, cfg, |e, f| {
        if f.accuracy_mean > 0.0 {
            format!("{:.1} %", 100.0 * e.accuracy_mean / f.accuracy_mean)
        } else {
            "–".into()
        }
    })?);
    writeln!(s, "\n## Macro-F1 (%) — {}\n", evaluator_label(&headline))?;
    s.push_str(&table(json, cfg, |e, _| format!("{} ± {}", pct(e.macro_f1_mean), pct(e.macro_f1_std)))?);
    for ev in evaluators.iter().skip(1) {
        writeln!(s, "\n## Accuracy (%) — {}\n", evaluator_label(ev))?;
        s.push_str(&table(json, cfg, |e, _| match score(e, ev) {
            Some(x) => format!("{} ± {}", pct(x.accuracy_mean), pct(x.accuracy_std)),
            None => "–".into(),
        })?);
    }

    if evaluators.len() > 2 {
        writeln!(s, "\n## Across architectures (Table IV)\n")?;
        writeln!(
            s,
            "Each set trains every evaluator; accuracy % (macro-F1 %) on the real test split, mean ± std over seeds. \
             Plugin evaluators are loaded at run time (see `scdd plugins`).\n"
        )?;
        s.push_str(&architectures_markdown(json, cfg, &evaluators)?);
    }
    for d in &json.datasets {
        writeln!(s, "\n## Dataset {}\n", d.name)?;
        writeln!(
            s,
            "`{}`, label `{}`: {} training and {} test cells, {} classes.\n",
            d.path,
            d.label,
            d.n_train,
            d.n_test,
            d.classes.len()
        )?;
        if let Some(f) = &d.foundation {
            let h = &f.heldout;
            let cm = match (h.class_mean_mse, h.class_mean_pearson) {
                (Some(m), Some(p)) => format!(" (the class-mean cell as reconstruction: MSE {m:.4}, Pearson {p:.3})"),
                _ => String::new(),
            };
            let reach = h.class_mean_reach_mse.map(|r| format!("; its class means (encoded, decoded): MSE {r:.4}")).unwrap_or_default();
            writeln!(
                s,
                "Foundation autoencoder, {} held-out training cells: MSE {:.4}, per-cell Pearson {:.3}{cm}{reach}; best epoch {} of {}.\n",
                h.cells, h.mse, h.pearson, f.best_epoch, f.epochs_run
            )?;
        }
        // Per-class accuracy: one row per synthetic set, one column per class.
        writeln!(s, "Per-class test accuracy (%); training cells per class in brackets:\n")?;
        let rows: Vec<&ResultEntry> = d.results.iter().chain(d.full.iter()).collect();
        write!(s, "| Training set |")?;
        for (c, name) in d.classes.iter().enumerate() {
            write!(s, " {name} ({}) |", d.train_per_class.get(c).copied().unwrap_or(0))?;
        }
        writeln!(s)?;
        writeln!(s, "|---|{}", "---:|".repeat(d.classes.len()))?;
        for e in &rows {
            match e.spc {
                Some(k) => write!(s, "| {} SPC {k} |", e.label)?,
                None => write!(s, "| {} |", e.label)?,
            }
            for name in &d.classes {
                match e.per_class_accuracy.get(name).copied().flatten() {
                    Some(a) => write!(s, " {:.1} |", 100.0 * a)?,
                    None => write!(s, " – |")?,
                }
            }
            writeln!(s)?;
        }
        if !d.results.is_empty() {
            let train = d.train_bytes.map(|b| format!(" (the training split's .h5ad: {})", fmt_bytes(b))).unwrap_or_default();
            writeln!(s, "\nDistillation: what is shared, its size{train}, final loss, steps and time:\n")?;
            writeln!(
                s,
                "| Method | SPC | shared file | size | final loss | steps | time | values out of range | median \\|Σ expm1 − target\\| |\n|---|---:|---|---:|---:|---:|---:|---:|---:|"
            )?;
            for e in &d.results {
                let file = e.files.get("distilled").and_then(|f| Path::new(f).extension()).map(|x| x.to_string_lossy().into_owned());
                let dash = || "—".to_string();
                let (oor, dev) = match &e.validity {
                    Some(v) => (format!("{:.4} %", 100.0 * v.out_of_range), format!("{:.1} %", 100.0 * v.sum_deviation)),
                    None => (dash(), dash()),
                };
                writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {oor} | {dev} |",
                    e.label,
                    e.spc.unwrap_or(0),
                    file.map(|x| format!(".{x}")).unwrap_or_else(dash),
                    e.output_bytes.map(fmt_bytes).unwrap_or_else(dash),
                    e.final_loss.map(|l| format!("{l:.4}")).unwrap_or_else(dash),
                    e.distill_steps.filter(|_| e.final_loss.is_some()).map(|n| n.to_string()).unwrap_or_else(dash),
                    e.distill_seconds.map(fmt_secs).unwrap_or_else(dash)
                )?;
            }
        }
        writeln!(s)?;
        for p in &d.plots {
            writeln!(s, "![{p}]({p})\n")?;
        }
    }

    writeln!(s, "## Stages\n")?;
    writeln!(s, "| Stage | Directory | This run | Time |\n|---|---|---|---:|")?;
    for st in &json.stages {
        let dir: PathBuf = st.dir.file_name().map(PathBuf::from).unwrap_or_default();
        writeln!(
            s,
            "| {} | `stages/{}` | {} | {} |",
            st.label,
            dir.display(),
            if st.ran { "ran" } else { "reused" },
            fmt_secs(st.seconds)
        )?;
    }
    let ran: f64 = json.stages.iter().filter(|s| s.ran).map(|s| s.seconds).sum();
    let all: f64 = json.stages.iter().map(|s| s.seconds).filter(|v| v.is_finite()).sum();
    writeln!(s, "\nStage time this run: {}; all stages as first computed: {}.", fmt_secs(ran), fmt_secs(all))?;
    Ok(s)
}

/// The Table IV view: for each dataset and SPC, methods × evaluators (accuracy ± std and
/// macro-F1), the full training set last; failures named below each table. With several
/// datasets, the mean accuracy over them first.
fn architectures_markdown(json: &ReportJson, cfg: &ReportConfig, evaluators: &[String]) -> Result<String> {
    let mut s = String::new();
    let header = |s: &mut String, first: &str| -> std::fmt::Result {
        write!(s, "| {first} |")?;
        for ev in evaluators {
            write!(s, " {} |", evaluator_label(ev))?;
        }
        writeln!(s)?;
        writeln!(s, "|---|{}", "---:|".repeat(evaluators.len()))
    };
    if json.datasets.len() > 1 {
        writeln!(s, "Mean accuracy % over the {} datasets:\n", json.datasets.len())?;
        header(&mut s, "Method")?;
        // `which`: a method and SPC, or None for the full training set.
        let mean_of = |which: Option<(Method, usize)>, ev: &str| -> String {
            let pick = |d: &DatasetReport| -> Option<f64> {
                let e = match which {
                    Some((m, k)) => d.results.iter().find(|e| e.method == m.name() && e.spc == Some(k)),
                    None => d.full.as_ref(),
                };
                e.and_then(|e| score(e, ev)).map(|x| x.accuracy_mean)
            };
            let v: Vec<f64> = json.datasets.iter().filter_map(pick).collect();
            if v.len() == json.datasets.len() {
                pct(v.iter().sum::<f64>() / v.len() as f64)
            } else {
                format!("– ({} of {})", v.len(), json.datasets.len())
            }
        };
        for &k in &cfg.spc {
            for m in &cfg.methods {
                write!(s, "| {} SPC {k} |", method_label(*m))?;
                for ev in evaluators {
                    write!(s, " {} |", mean_of(Some((*m, k)), ev))?;
                }
                writeln!(s)?;
            }
        }
        if json.datasets.iter().all(|d| d.full.is_some()) {
            write!(s, "| {FULL_LABEL} |")?;
            for ev in evaluators {
                write!(s, " {} |", mean_of(None, ev))?;
            }
            writeln!(s)?;
        }
        writeln!(s)?;
    }
    let cell = |e: &ResultEntry, ev: &str| match (score(e, ev), e.failures.get(ev)) {
        (Some(x), _) => format!(
            "{} ± {} ({}){}",
            pct(x.accuracy_mean),
            pct(x.accuracy_std),
            pct(x.macro_f1_mean),
            if x.warnings.is_empty() { "" } else { " ⚠" }
        ),
        (None, Some(_)) => "failed".to_string(),
        (None, None) => "–".to_string(),
    };
    for d in &json.datasets {
        writeln!(s, "{}:\n", d.name)?;
        header(&mut s, "Training set")?;
        let mut failed: BTreeMap<String, String> = BTreeMap::new();
        let mut warned: Vec<String> = Vec::new();
        for &k in &cfg.spc {
            for e in d.results.iter().filter(|e| e.spc == Some(k)) {
                write!(s, "| {} SPC {k} |", e.label)?;
                for ev in evaluators {
                    write!(s, " {} |", cell(e, ev))?;
                }
                writeln!(s)?;
                failed.extend(e.failures.clone());
                for x in e.by_evaluator.iter().filter(|x| x.evaluator != HEADLINE) {
                    for w in &x.warnings {
                        warned.push(format!("{} SPC {k}, {}: {w}", e.label, x.evaluator));
                    }
                }
            }
        }
        if let Some(f) = &d.full {
            write!(s, "| {} |", f.label)?;
            for ev in evaluators {
                write!(s, " {} |", cell(f, ev))?;
            }
            writeln!(s)?;
            failed.extend(f.failures.clone());
        }
        writeln!(s)?;
        for (ev, why) in failed {
            writeln!(s, "- {ev} failed: {why}")?;
        }
        for w in warned {
            writeln!(s, "- ⚠ {w}")?;
        }
        writeln!(s)?;
    }
    Ok(s)
}

/// `41.4 kB`, `14.4 MB` (decimal units, as file managers show them).
fn fmt_bytes(b: u64) -> String {
    match b {
        0..1_000 => format!("{b} B"),
        1_000..1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        _ => format!("{:.2} GB", b as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_read_like_a_file_manager() {
        let got: Vec<String> = [999, 1_000, 41_352, 14_392_402, 2_500_000_000].into_iter().map(fmt_bytes).collect();
        assert_eq!(got, ["999 B", "1.0 kB", "41.4 kB", "14.4 MB", "2.50 GB"]);
    }

    #[test]
    fn pca_finds_the_leading_axes() {
        // Points spread along e0 (large) and e1 (small).
        let x = Array2::from_shape_fn((200, 4), |(i, j)| {
            let t = (i / 2) as f32 / 100.0 - 0.5; // pairs share t, so the two axes are uncorrelated
            match j {
                0 => 10.0 * t,
                1 => if i % 2 == 0 { 1.0 } else { -1.0 },
                _ => 0.0,
            }
        });
        let (_, [a, b]) = pca2(&x);
        assert!((a[0].abs() - 1.0).abs() < 1e-6, "{a:?}");
        assert!((b[1].abs() - 1.0).abs() < 1e-6, "{b:?}");
        assert!(dot(&a, &b).abs() < 1e-9);
    }

    #[test]
    fn markers_are_class_specific() {
        let m = ndarray::array![[5.0, 0.0, 1.0, 0.0], [0.0, 4.0, 1.0, 0.0]];
        let g = marker_genes(&m, 1);
        assert_eq!(g, vec![(0, 0), (1, 1)]);
        let x = ndarray::array![[1.0f32, 2.0], [3.0, 4.0]];
        let cm = class_means(&x, &[0, 0], 2);
        assert_eq!(cm[[0, 0]], 2.0);
        assert!(cm[[1, 0]].is_nan());
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio_pct(8.0 / 2587.0), "0.309 %");
        assert_eq!(ratio_pct(0.031), "3.10 %");
        assert_eq!(ratio_pct(1.0), "100.0 %");
    }
}

