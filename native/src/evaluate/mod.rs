//! Evaluating a synthetic (or any) training set against real test cells with the built-in
//! evaluators, each repeated over fresh initialisations: `default` (the frozen foundation
//! encoder and a linear head, the paper's number), `lr` (logistic regression on the
//! log-normalised genes) and `mlp` (one hidden layer on the genes). The headline of a set is the
//! mean over the gene-space evaluators: what a recipient's own classifier would see.
//! Plugin evaluators ([`host`]) run next to them, each fit in a worker subprocess; one that fails
//! is recorded with its reason and the others carry on. [`input`] turns files into evaluator
//! input.
pub mod host;
pub mod input;
pub mod plugins;
pub mod worker;

use crate::error::{bail, Result};
use crate::params::{self, Check, Checked};
use ndarray::{Array2, ArrayView2};
use scdd_core::evaluate::{
    Evaluator, FoundationLinearProbe, LogRegParams, LogisticRegression, Mlp, MlpParams, SgdParams, TrainingSet,
};
use scdd_core::metrics::{classification_report, mean_std, ClassificationReport};
use scdd_core::reference::CpuModel;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::time::{Duration, Instant};

pub use host::{EvalFailure, EvaluatorSpec, PluginSpec};

/// A built-in evaluator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvaluatorKind {
    /// The frozen foundation encoder + one linear head (SGD): the paper's default.
    Default,
    /// Multinomial L2 logistic regression on log-normalised genes, no scaler.
    Lr,
    /// One hidden ReLU layer on log-normalised genes.
    Mlp,
}

impl EvaluatorKind {
    pub const ALL: [EvaluatorKind; 3] = [EvaluatorKind::Default, EvaluatorKind::Lr, EvaluatorKind::Mlp];

    pub fn name(self) -> &'static str {
        match self {
            EvaluatorKind::Default => "default",
            EvaluatorKind::Lr => "lr",
            EvaluatorKind::Mlp => "mlp",
        }
    }

    /// How tables name it.
    pub fn label(self) -> &'static str {
        match self {
            EvaluatorKind::Default => "encoder + linear (paper)",
            EvaluatorKind::Lr => "logistic regression (genes)",
            EvaluatorKind::Mlp => "MLP (genes)",
        }
    }

    /// Reads gene values (not the distillation encoder's features).
    pub fn gene_space(self) -> bool {
        !matches!(self, EvaluatorKind::Default)
    }
}

impl FromStr for EvaluatorKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
            format!("unknown evaluator '{s}' (known: {})", names.join(", "))
        })
    }
}

/// The name of the headline: the mean over the gene-space evaluators.
pub const HEADLINE: &str = "genes-mean";

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
    /// What a reader must know about these numbers, e.g. a fit whose predictions collapsed
    /// onto one class ([`collapsed`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Wall seconds per repeat, fit and predict together (a plugin's include its worker process
    /// and data transfer); 0 where not measured.
    #[serde(default)]
    pub seconds_per_fit: f64,
}

pub use scdd_core::metrics::collapsed;

/// What `eval.json` holds: one summary per evaluator that ran, in the order run, and the
/// evaluators that failed with their reasons.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalResults {
    pub results: Vec<EvalSummary>,
    #[serde(default)]
    pub failures: Vec<EvalFailure>,
}

impl EvalResults {
    pub fn get(&self, evaluator: &str) -> Option<&EvalSummary> {
        self.results.iter().find(|s| s.evaluator == evaluator)
    }

    /// The mean over the gene-space evaluators (their accuracies, F1s and per-class recalls
    /// averaged; the std is that of the mean of independent evaluators); None when none ran.
    pub fn headline(&self) -> Option<EvalSummary> {
        let parts: Vec<&EvalSummary> = self
            .results
            .iter()
            .filter(|s| s.evaluator.parse::<EvaluatorKind>().is_ok_and(|k| k.gene_space()))
            .collect();
        let first = parts.first()?;
        let m = parts.len() as f64;
        let mean = |f: &dyn Fn(&EvalSummary) -> f64| parts.iter().map(|s| f(s)).sum::<f64>() / m;
        let pooled = |f: &dyn Fn(&EvalSummary) -> f64| (parts.iter().map(|s| f(s).powi(2)).sum::<f64>()).sqrt() / m;
        let n_classes = first.classes.len();
        let mut confusion = vec![vec![0u64; n_classes]; n_classes];
        for s in &parts {
            for (i, row) in s.confusion.iter().enumerate() {
                for (j, v) in row.iter().enumerate() {
                    confusion[i][j] += v;
                }
            }
        }
        Some(EvalSummary {
            evaluator: HEADLINE.into(),
            n_train: first.n_train,
            n_test: first.n_test,
            repeats: parts.iter().map(|s| s.repeats).sum(),
            accuracy_mean: mean(&|s| s.accuracy_mean),
            accuracy_std: pooled(&|s| s.accuracy_std),
            macro_f1_mean: mean(&|s| s.macro_f1_mean),
            macro_f1_std: pooled(&|s| s.macro_f1_std),
            accuracies: parts.iter().map(|s| s.accuracy_mean).collect(),
            per_class_accuracy: (0..n_classes).map(|c| mean(&|s| s.per_class_accuracy[c])).collect(),
            confusion,
            classes: first.classes.clone(),
            warnings: parts.iter().flat_map(|s| s.warnings.iter().map(move |w| format!("{}: {w}", s.evaluator))).collect(),
            seconds_per_fit: 0.0,
        })
    }
}

/// The real test cells: labels, and what each evaluator reads — encoder features for
/// `default`, log-normalised genes (bundle order) for the gene-space evaluators.
pub struct TestSet {
    pub features: Option<Array2<f32>>,
    pub genes: Option<Array2<f32>>,
    pub labels: Vec<u32>,
}

impl TestSet {
    /// Both views of the log-normalised test cells `x` (features only when there is a model
    /// with an encoder).
    pub fn new(model: Option<&CpuModel>, x: Array2<f32>, labels: Vec<u32>) -> Result<Self> {
        let features = match model {
            Some(m) if m.spec.encoder.is_some() => Some(FoundationLinearProbe::new(m, SgdParams::default())?.features(x.view())?),
            _ => None,
        };
        Ok(TestSet { features, genes: Some(x), labels })
    }
}

/// How evaluators are repeated and trained: `scdd evaluate`'s flags, the pipeline's `[evaluate]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalParams {
    /// Fresh initialisations of each evaluator (seeds `seed..seed+repeats`); an evaluator whose
    /// fit does not depend on the seed (`lr`) runs once.
    pub repeats: usize,
    pub seed: u64,
    /// SGD steps of the default evaluator's linear head.
    pub steps: usize,
    /// Learning rate of the default evaluator's linear head.
    pub lr: f32,
    /// Which evaluators run.
    pub evaluators: Vec<EvaluatorSpec>,
    /// Time limit of one plugin fit + predict, seconds (its worker is stopped after it).
    #[serde(default = "default_plugin_time_limit")]
    pub plugin_time_limit_s: u64,
    /// Repeats of each plugin evaluator when not `repeats` (neural plugins cost minutes a fit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_repeats: Option<usize>,
}

fn default_plugin_time_limit() -> u64 {
    3600
}

impl Default for EvalParams {
    fn default() -> Self {
        EvalParams {
            repeats: 10,
            seed: 0,
            steps: SgdParams::default().steps,
            lr: SgdParams::default().lr,
            evaluators: EvaluatorKind::ALL.into_iter().map(EvaluatorSpec::BuiltIn).collect(),
            plugin_time_limit_s: default_plugin_time_limit(),
            plugin_repeats: None,
        }
    }
}

impl Check for EvalParams {
    fn validate(&self) -> Result<()> {
        params::count("--repeats", self.repeats as u64, 1, 10_000)?;
        params::count("--steps", self.steps as u64, 1, 10_000_000)?;
        params::positive("--lr", self.lr as f64)?;
        params::count("--plugin-time-limit", self.plugin_time_limit_s, 1, 7 * 24 * 3600)?;
        if let Some(r) = self.plugin_repeats {
            params::count("--plugin-repeats", r as u64, 1, 10_000)?;
        }
        if self.evaluators.is_empty() {
            bail!("--evaluators: empty (built in: default, lr, mlp; or plugins)");
        }
        for (i, e) in self.evaluators.iter().enumerate() {
            if self.evaluators[..i].iter().any(|o| o.name() == e.name()) {
                bail!("--evaluators: '{}' given twice", e.name());
            }
        }
        Ok(())
    }
}

impl EvalParams {
    pub fn sgd(&self) -> SgdParams {
        SgdParams { steps: self.steps, lr: self.lr, ..SgdParams::default() }
    }

    pub fn needs_encoder(&self) -> bool {
        self.evaluators.contains(&EvaluatorSpec::BuiltIn(EvaluatorKind::Default))
    }

    /// Whether any evaluator reads the cells' genes.
    pub fn gene_space(&self) -> bool {
        self.evaluators.iter().any(|e| e.gene_space())
    }
}

/// Scores of `repeats` fits on the test labels.
fn summarise(evaluator: &str, n_train: usize, test: &[u32], preds: &[Vec<u32>], classes: &[String], seconds_per_fit: f64) -> EvalSummary {
    let n_classes = classes.len();
    let reports: Vec<ClassificationReport> = preds.iter().map(|p| classification_report(test, p, n_classes)).collect();
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
    let collapses: Vec<(usize, f64, f64)> = preds.iter().filter_map(|p| collapsed(test, p, n_classes)).collect();
    let warnings = match collapses.first() {
        Some(&(c, share, truth)) => vec![format!(
            "degenerate fit: predictions collapsed onto one class in {} of {} fits (e.g. {:.0} % of test cells called '{}', which is {:.0} % of them)",
            collapses.len(),
            preds.len(),
            100.0 * share,
            classes[c],
            100.0 * truth
        )],
        None => Vec::new(),
    };
    EvalSummary {
        warnings,
        seconds_per_fit,
        evaluator: evaluator.into(),
        n_train,
        n_test: test.len(),
        repeats: reports.len(),
        accuracy_mean: am,
        accuracy_std: asd,
        macro_f1_mean: fm,
        macro_f1_std: fsd,
        accuracies: accs,
        per_class_accuracy: per_class,
        confusion,
        classes: classes.to_vec(),
    }
}

/// Trains each evaluator of `plan` `plan.repeats` times (seeds `seed..seed+repeats`) on
/// `x`/`labels` (log-normalised genes in the bundle's order, `genes`) and scores each on `test`.
/// `model` is the generator bundle's (the default evaluator needs its encoder); without one the
/// cells are log1p-normalised genes. A plugin that fails is recorded in `failures` and the
/// others carry on; a built-in evaluator that fails is an error.
pub fn evaluate(
    model: Option<&CpuModel>,
    x: ArrayView2<f32>,
    labels: &[u32],
    classes: &[String],
    genes: &[String],
    test: &TestSet,
    plan: &Checked<EvalParams>,
) -> Result<EvalResults> {
    if x.nrows() == 0 {
        bail!("the training set is empty");
    }
    let n_classes = classes.len();
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for spec in &plan.evaluators {
        let mut preds = Vec::with_capacity(plan.repeats);
        let started = Instant::now();
        let per_fit = |n: usize| started.elapsed().as_secs_f64() / n.max(1) as f64;
        let kind = match spec {
            EvaluatorSpec::BuiltIn(k) => *k,
            EvaluatorSpec::Plugin(p) => {
                let settings = (plan.seed, plan.plugin_repeats.unwrap_or(plan.repeats), Duration::from_secs(plan.plugin_time_limit_s));
                match host::run_plugin(p, x, labels, classes, genes, test, model.is_none_or(|m| m.spec.space.log1p), settings) {
                    Ok(preds) => results.push(summarise(&p.name, x.nrows(), &test.labels, &preds, classes, per_fit(preds.len()))),
                    Err(error) => {
                        eprintln!("evaluator {} ({}) failed: {error}", p.name, p.path.display());
                        failures.push(EvalFailure { evaluator: p.name.clone(), error });
                    }
                }
                continue;
            }
        };
        match kind {
            EvaluatorKind::Default => {
                let (Some(test_features), Some(model)) = (&test.features, model) else { bail!("the default evaluator needs the foundation encoder") };
                let mut probe = FoundationLinearProbe::new(model, plan.sgd())?;
                let features = probe.features(x)?;
                for r in 0..plan.repeats {
                    probe.fit_features(features.view(), labels, n_classes, plan.seed + r as u64)?;
                    preds.push(probe.predict_features(test_features.view())?);
                }
            }
            EvaluatorKind::Lr | EvaluatorKind::Mlp => {
                let Some(test_x) = &test.genes else { bail!("the {} evaluator needs the test cells' genes", kind.name()) };
                let mut ev: Box<dyn Evaluator> = match kind {
                    EvaluatorKind::Lr => Box::new(LogisticRegression::new(LogRegParams::default())),
                    _ => Box::new(Mlp::new(MlpParams::default())),
                };
                let data = TrainingSet { x: x.view(), labels, n_classes, genes: &[] };
                let repeats = if ev.seed_independent() { 1 } else { plan.repeats };
                for r in 0..repeats {
                    ev.fit(&data, plan.seed + r as u64)?;
                    preds.push(ev.predict(test_x.view())?);
                }
            }
        }
        results.push(summarise(kind.name(), x.nrows(), &test.labels, &preds, classes, per_fit(preds.len())));
    }
    Ok(EvalResults { results, failures })
}

fn label_of(evaluator: &str) -> &str {
    match evaluator.parse::<EvaluatorKind>() {
        Ok(k) => k.label(),
        Err(_) if evaluator == HEADLINE => "mean of gene-space evaluators",
        Err(_) => evaluator,
    }
}

/// The results as a readable table: one row per evaluator (and the gene-space headline),
/// per-class recall per evaluator, and the headline's confusion matrix.
pub fn render(r: &EvalResults) -> String {
    let mut rows: Vec<EvalSummary> = r.results.clone();
    if let Some(h) = r.headline() {
        rows.push(h);
    }
    let mut failed = String::new();
    for f in &r.failures {
        failed.push_str(&format!("  {:<32} failed: {}\n", f.evaluator, f.error));
    }
    let Some(first) = rows.first() else { return format!("no evaluator ran\n{failed}") };
    let mut out = format!("trained on {} cells, tested on {} real cells\n\n", first.n_train, first.n_test);
    out.push_str(&format!("  {:<32} {:>7}  {:>15}  {:>15}  {:>8}\n", "evaluator", "repeats", "accuracy %", "macro-F1 %", "s / fit"));
    for s in &rows {
        let secs = if s.seconds_per_fit > 0.0 { format!("{:.2}", s.seconds_per_fit) } else { "-".into() };
        out.push_str(&format!(
            "  {:<32} {:>7}  {:>15}  {:>15}  {:>8}\n",
            label_of(&s.evaluator),
            s.repeats,
            format!("{:.2} ± {:.2}", 100.0 * s.accuracy_mean, 100.0 * s.accuracy_std),
            format!("{:.2} ± {:.2}", 100.0 * s.macro_f1_mean, 100.0 * s.macro_f1_std),
            secs
        ));
    }
    out.push_str(&failed);
    for s in &r.results {
        for w in &s.warnings {
            out.push_str(&format!("  {:<32} warning: {w}\n", s.evaluator));
        }
    }
    let w = first.classes.iter().map(|c| c.len()).max().unwrap_or(5).max(5);
    out.push_str(&format!("\n  per-class accuracy %\n  {:<w$}  {:>7}", "class", "support"));
    for s in &rows {
        out.push_str(&format!("  {:>10}", s.evaluator));
    }
    out.push('\n');
    for (c, name) in first.classes.iter().enumerate() {
        let support: u64 = first.confusion[c].iter().sum::<u64>() / first.repeats.max(1) as u64;
        out.push_str(&format!("  {name:<w$}  {support:>7}"));
        for s in &rows {
            let acc = s.per_class_accuracy[c];
            let acc = if acc.is_nan() { "-".to_string() } else { format!("{:.1}", 100.0 * acc) };
            out.push_str(&format!("  {acc:>10}"));
        }
        out.push('\n');
    }
    let last = rows.last().unwrap();
    out.push_str(&format!("\n  confusion of {} (rows: true, columns: predicted; summed over repeats)\n", last.evaluator));
    for (c, row) in last.confusion.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:>6}")).collect();
        out.push_str(&format!("  {:<w$} {}\n", last.classes[c], cells.join("")));
    }
    out
}
