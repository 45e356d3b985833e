//! Evaluating a synthetic (or any) training set against real test cells with the default
//! evaluator (the frozen foundation encoder and a linear head), repeated over fresh
//! initialisations; [`input`] turns files into evaluator input. This is where plugin
//! evaluators will be hosted.
pub mod input;

use crate::error::{bail, Result};
use crate::params::{self, Check, Checked};
use ndarray::{Array2, ArrayView2};
use scdd_core::evaluate::{FoundationLinearProbe, SgdParams};
use scdd_core::metrics::{classification_report, mean_std, ClassificationReport};
use scdd_core::reference::CpuModel;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalSummary {
    pub evaluator: String,
    pub n_train: usize,
    pub n_test: usize,
    pub repeats: usize,
    pub accuracy_mean: f64,
    pub accuracy_std: f64,
    pub macro_f1_mean: f64,
    pub macro_f1_std: f64,
    pub accuracies: Vec<f64>,
    /// Per-class recall averaged over repeats (NaN: class absent from the test set).
    pub per_class_accuracy: Vec<f64>,
    /// Confusion counts summed over repeats, `[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    pub classes: Vec<String>,
}

/// Test-set encoder features, computed once and reused for every evaluated training set.
pub struct TestSet {
    pub features: Array2<f32>,
    pub labels: Vec<u32>,
}

impl TestSet {
    pub fn new(model: &CpuModel, x: ArrayView2<f32>, labels: Vec<u32>) -> Result<Self> {
        let probe = FoundationLinearProbe::new(model, SgdParams::default())?;
        Ok(TestSet { features: probe.features(x)?, labels })
    }
}

/// How evaluators are repeated and trained: `scdd evaluate`'s flags, the pipeline's `[evaluate]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalParams {
    /// Fresh initialisations of the evaluator (seeds `seed..seed+repeats`).
    pub repeats: usize,
    pub seed: u64,
    /// SGD steps of the linear head.
    pub steps: usize,
    /// Learning rate of the linear head.
    pub lr: f32,
}

impl Default for EvalParams {
    fn default() -> Self {
        EvalParams { repeats: 10, seed: 0, steps: SgdParams::default().steps, lr: SgdParams::default().lr }
    }
}

impl Check for EvalParams {
    fn validate(&self) -> Result<()> {
        params::count("--repeats", self.repeats as u64, 1, 10_000)?;
        params::count("--steps", self.steps as u64, 1, 10_000_000)?;
        params::positive("--lr", self.lr as f64)?;
        Ok(())
    }
}

impl EvalParams {
    pub fn sgd(&self) -> SgdParams {
        SgdParams { steps: self.steps, lr: self.lr, ..SgdParams::default() }
    }
}

/// Trains the default evaluator `plan.repeats` times (seeds `seed..seed+repeats`) on
/// `x`/`labels` and scores each on `test`.
pub fn evaluate_default(
    model: &CpuModel,
    x: ArrayView2<f32>,
    labels: &[u32],
    classes: &[String],
    test: &TestSet,
    plan: &Checked<EvalParams>,
) -> Result<EvalSummary> {
    if x.nrows() == 0 {
        bail!("the training set is empty");
    }
    let (repeats, seed) = (plan.repeats, plan.seed);
    let mut probe = FoundationLinearProbe::new(model, plan.sgd())?;
    let features = probe.features(x)?;
    let n_classes = classes.len();
    let mut reports: Vec<ClassificationReport> = Vec::with_capacity(repeats);
    for r in 0..repeats {
        probe.fit_features(features.view(), labels, n_classes, seed + r as u64)?;
        let pred = probe.predict_features(test.features.view())?;
        reports.push(classification_report(&test.labels, &pred, n_classes));
    }
    let accs: Vec<f64> = reports.iter().map(|r| r.accuracy).collect();
    let f1s: Vec<f64> = reports.iter().map(|r| r.macro_f1).collect();
    let (am, asd) = mean_std(&accs);
    let (fm, fsd) = mean_std(&f1s);
    let per_class = (0..n_classes)
        .map(|c| reports.iter().map(|r| r.per_class_accuracy[c]).sum::<f64>() / reports.len() as f64)
        .collect();
    let mut confusion = vec![vec![0u64; n_classes]; n_classes];
    for r in &reports {
        for (i, row) in r.confusion.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                confusion[i][j] += v;
            }
        }
    }
    Ok(EvalSummary {
        evaluator: "foundation+linear".into(),
        n_train: x.nrows(),
        n_test: test.labels.len(),
        repeats: reports.len(),
        accuracy_mean: am,
        accuracy_std: asd,
        macro_f1_mean: fm,
        macro_f1_std: fsd,
        accuracies: accs,
        per_class_accuracy: per_class,
        confusion,
        classes: classes.to_vec(),
    })
}

/// The summary as a readable table.
pub fn render(s: &EvalSummary) -> String {
    let mut out = format!(
        "evaluator {}: trained on {} cells, tested on {} real cells, {} repeats\n  accuracy  {:.2} ± {:.2} %\n  macro-F1  {:.2} ± {:.2} %\n\n",
        s.evaluator,
        s.n_train,
        s.n_test,
        s.repeats,
        100.0 * s.accuracy_mean,
        100.0 * s.accuracy_std,
        100.0 * s.macro_f1_mean,
        100.0 * s.macro_f1_std
    );
    let w = s.classes.iter().map(|c| c.len()).max().unwrap_or(5).max(5);
    out.push_str(&format!("  {:<w$}  {:>8}  {:>7}\n", "class", "accuracy", "support"));
    for (c, name) in s.classes.iter().enumerate() {
        let support: u64 = s.confusion[c].iter().sum::<u64>() / s.repeats.max(1) as u64;
        let acc = s.per_class_accuracy[c];
        let acc = if acc.is_nan() { "-".to_string() } else { format!("{:.1}%", 100.0 * acc) };
        out.push_str(&format!("  {name:<w$}  {acc:>8}  {support:>7}\n"));
    }
    out.push_str("\n  confusion (rows: true, columns: predicted; summed over repeats)\n");
    for (c, row) in s.confusion.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:>6}")).collect();
        out.push_str(&format!("  {:<w$} {}\n", s.classes[c], cells.join("")));
    }
    out
}
