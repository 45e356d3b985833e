//! What the page does with decoded cells, independent of the browser (so native tests run the
//! same code): prepare a recipient's test cells as the native reader does, train an evaluator
//! on the synthetic cells and score it on them, and project both for a scatter plot.
use crate::gpu::Gpu;
use crate::train::{GpuClassifier, Scaler, TrainSettings};
use ndarray::{Array2, ArrayView2};
use scdd_core::bundle::GeneratorBundle;
use scdd_core::dataset::Dataset;
use scdd_core::evaluate::{Evaluator, LogRegParams, LogisticRegression, Mlp, MlpParams, TrainingSet};
use scdd_core::explore::{top_genes, ClassMarkers, Pca};
use scdd_core::matrix::CsrMatrix;
use scdd_core::metrics::{classification_report, collapsed, ClassificationReport};
use scdd_core::obs::ObsTable;
use scdd_core::preprocess::{self, CountType};
use serde::Serialize;

/// A recipient's test cells in the model's space: log-normalised (counts normalised to the
/// model's target sum + log1p, never twice), genes in the bundle's order (absent genes zero),
/// only cells whose label is one of the model's classes.
pub struct TestCells {
    /// cells × the bundle's genes, row-major.
    pub x: Vec<f32>,
    pub labels: Vec<u32>,
    pub report: TestReport,
}

/// What preparing the test cells found, for the page to show.
#[derive(Clone, Debug, Serialize)]
pub struct TestReport {
    pub cells_in_file: usize,
    pub cells_kept: usize,
    /// Cells without a label, and cells whose label the model does not know (with those labels).
    pub unlabelled: usize,
    pub unknown_class: usize,
    pub unknown_classes: Vec<String>,
    /// What the file held ("raw counts", "log-normalised …", or "already in the model's space").
    pub values: String,
    pub genes_in_file: usize,
    pub model_genes: usize,
    pub shared_genes: usize,
    pub min_shared_genes: usize,
    /// Up to 20 model genes absent from the file.
    pub missing_sample: Vec<String>,
}

impl TestCells {
    /// `x`: the file's matrix (cells × its genes); `genes`: its gene names; `labels`: each cell's
    /// label (`None` when missing); `in_space`: the file says its values are already in a model's
    /// space (scdd's own synthetic cells), so nothing is converted. `file` names it in errors.
    pub fn prepare(file: &str, mut x: CsrMatrix, genes: Vec<String>, labels: &[Option<String>], in_space: bool, bundle: &GeneratorBundle) -> Result<TestCells, String> {
        let n = x.n_rows();
        if n == 0 {
            return Err(format!("{file}: the test set has no cells"));
        }
        if labels.len() != n || genes.len() != x.n_cols() {
            return Err(format!("{file}: {n} cells × {} genes with {} labels and {} gene names", x.n_cols(), labels.len(), genes.len()));
        }
        preprocess::check_non_negative(&x, &format!("{file}:X")).map_err(|e| e.to_string())?;
        let space = &bundle.spec.space;
        let values = if in_space {
            "already in the model's space".to_string()
        } else {
            let kind = preprocess::to_log_normalized(&mut x, space.target_sum, &format!("{file}:X")).map_err(|e| e.to_string())?;
            match kind {
                CountType::RawCounts => "raw counts (normalised and log1p-transformed here)".to_string(),
                k => k.to_string(),
            }
        };
        let obs = ObsTable { index: (0..n).map(|i| i.to_string()).collect(), columns: Vec::new() };
        let ds = Dataset::new(file, x, genes, obs).map_err(|e| e.to_string())?;
        let min_shared_genes = preprocess::min_overlap(bundle.genes.len());
        let (aligned, alignment) = preprocess::align_genes(&ds, &bundle.genes, min_shared_genes).map_err(|e| e.to_string())?;
        let (mut keep, mut ids) = (Vec::new(), Vec::new());
        let (mut unlabelled, mut unknown) = (0, std::collections::BTreeMap::<String, usize>::new());
        for (i, l) in labels.iter().enumerate() {
            match l {
                None => unlabelled += 1,
                Some(l) => match bundle.classes.iter().position(|c| c == l) {
                    Some(c) => {
                        keep.push(i);
                        ids.push(c as u32);
                    }
                    None => *unknown.entry(l.clone()).or_default() += 1,
                },
            }
        }
        if keep.is_empty() {
            let seen: Vec<&String> = unknown.keys().take(8).collect();
            return Err(format!(
                "{file}: no cell has one of the model's classes ({}); its labels: {}",
                bundle.classes.join(", "),
                if seen.is_empty() { "none".to_string() } else { seen.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ") }
            ));
        }
        let dense = aligned.x.dense_rows(&keep);
        let report = TestReport {
            cells_in_file: n,
            cells_kept: keep.len(),
            unlabelled,
            unknown_class: unknown.values().sum(),
            unknown_classes: unknown.keys().cloned().collect(),
            values,
            genes_in_file: alignment.n_data,
            model_genes: alignment.n_reference,
            shared_genes: alignment.overlap,
            min_shared_genes,
            missing_sample: alignment.missing_sample,
        };
        Ok(TestCells { x: dense.into_raw_vec_and_offset().0, labels: ids, report })
    }

    pub fn n_cells(&self) -> usize {
        self.labels.len()
    }
}

/// The in-browser evaluators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EvaluatorKind {
    /// CellTypist-style: z-scaling fit on the training cells, clip ±10, softmax regression, C = 1.
    Logistic,
    /// One hidden ReLU layer on the same scaled cells.
    Mlp,
}

impl EvaluatorKind {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "logistic" | "lr" | "celltypist" => Ok(EvaluatorKind::Logistic),
            "mlp" => Ok(EvaluatorKind::Mlp),
            _ => Err(format!("unknown evaluator {s:?} (logistic or mlp)")),
        }
    }
}

/// Where an evaluator trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainOn {
    /// WGSL on a GPU; the core's CPU solvers when the adapter is itself a CPU (SwiftShader,
    /// lavapipe: emulated compute is slower there than plain code — measured in SwiftShader on
    /// 80 cells × 1 501 genes: the WGSL logistic regression 30 s, the MLP over 5 min).
    Auto,
    /// WGSL on whatever adapter there is.
    Device,
    /// The core's solvers.
    Cpu,
}

impl TrainOn {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "" | "auto" => Ok(TrainOn::Auto),
            "webgpu" | "gpu" | "device" => Ok(TrainOn::Device),
            "cpu" => Ok(TrainOn::Cpu),
            _ => Err(format!("train on {s:?}: auto, webgpu or cpu")),
        }
    }

    /// The device to train on, given the one decoding has (if any).
    pub fn pick(self, gpu: Option<&Gpu>) -> Result<Option<&Gpu>, String> {
        match (self, gpu) {
            (TrainOn::Cpu, _) => Ok(None),
            (TrainOn::Device, None) => Err("no WebGPU device here: train on the CPU".into()),
            (TrainOn::Device, g) => Ok(g),
            (TrainOn::Auto, Some(g)) if !g.cpu_adapter => Ok(Some(g)),
            (TrainOn::Auto, _) => Ok(None),
        }
    }
}

/// An evaluator's scores on the test cells.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub evaluator: EvaluatorKind,
    /// Where it trained: "WGSL on <adapter>" or "CPU (core reference)".
    pub backend: String,
    pub train_cells: usize,
    pub test_cells: usize,
    pub classes: Vec<String>,
    #[serde(flatten)]
    pub scores: ClassificationReport,
    /// Set when the predictions collapsed onto one class ([`collapsed`]): the page warns.
    pub collapsed: Option<Collapse>,
}

/// A degenerate fit: `share` of the test cells called `class`, which is `truth` of them.
#[derive(Clone, Debug, Serialize)]
pub struct Collapse {
    pub class: String,
    pub share: f64,
    pub truth: f64,
}

/// Trains `kind` on the synthetic cells (`n` × the bundle's genes) and scores it on `test`: on
/// the device when `gpu` is given, else with the core's CPU solvers on the same scaled cells
/// (L-BFGS for the logistic regression, the core's MLP). `progress` hears the fraction of the
/// training done.
#[allow(clippy::too_many_arguments)]
pub async fn evaluate(gpu: Option<&Gpu>, cells: &[f32], labels: &[u32], classes: &[String], test: &TestCells, kind: EvaluatorKind, seed: u64, progress: &mut dyn FnMut(f64)) -> Result<Evaluation, String> {
    let (n, k) = (labels.len(), classes.len());
    let d = cells.len().checked_div(n).unwrap_or(0);
    if n == 0 || d == 0 || cells.len() != n * d || test.x.len() != test.n_cells() * d {
        return Err(format!("{} synthetic values for {n} cells; test cells of width {}", cells.len(), test.x.len() / test.n_cells().max(1)));
    }
    let (predicted, backend) = match gpu {
        Some(gpu) => {
            let settings = match kind {
                EvaluatorKind::Logistic => TrainSettings::logistic(n),
                EvaluatorKind::Mlp => TrainSettings::mlp(seed),
            };
            let model = GpuClassifier::fit_reporting(gpu, cells, (n, d), labels, k, &settings, progress).await?;
            (model.predict(gpu, &test.x, test.n_cells()).await?, format!("WGSL on {}", gpu.adapter))
        }
        None => {
            let scaler = Scaler::fit(cells, n, d);
            let z = Array2::from_shape_vec((n, d), scaler.apply(cells)).map_err(|e| e.to_string())?;
            let zt = Array2::from_shape_vec((test.n_cells(), d), scaler.apply(&test.x)).map_err(|e| e.to_string())?;
            let set = TrainingSet { x: z.view(), labels, n_classes: k, genes: &[] };
            let mut model: Box<dyn Evaluator> = match kind {
                EvaluatorKind::Logistic => Box::new(LogisticRegression::new(LogRegParams::default())),
                EvaluatorKind::Mlp => Box::new(Mlp::new(MlpParams::default())),
            };
            model.fit_reporting(&set, seed, progress).map_err(|e| e.to_string())?;
            (model.predict(zt.view()).map_err(|e| e.to_string())?, "CPU (core reference)".to_string())
        }
    };
    Ok(Evaluation {
        evaluator: kind,
        backend,
        train_cells: n,
        test_cells: test.n_cells(),
        classes: classes.to_vec(),
        scores: classification_report(&test.labels, &predicted, k),
        collapsed: collapsed(&test.labels, &predicted, k).map(|(c, share, truth)| Collapse { class: classes[c].clone(), share, truth }),
    })
}

/// Synthetic (and test) cells in the plane of the first two principal components, and the top
/// genes of each class of the synthetic cells.
#[derive(Clone, Debug, Serialize)]
pub struct Exploration {
    /// PCA fit on the test cells when given (the real structure), else on the synthetic cells.
    pub fitted_on: String,
    pub variance_ratio: Vec<f64>,
    /// x, y per cell.
    pub synthetic: Vec<[f32; 2]>,
    pub synthetic_labels: Vec<u32>,
    pub test: Vec<[f32; 2]>,
    pub test_labels: Vec<u32>,
    pub markers: Vec<ClassMarkers>,
}

/// At most this many test cells are drawn (evenly spaced), to keep the plot and the fit light.
pub const MAX_PLOTTED_TEST_CELLS: usize = 5000;

pub fn explore(cells: &[f32], labels: &[u32], bundle: &GeneratorBundle, test: Option<&TestCells>, n_top: usize) -> Result<Exploration, String> {
    let d = bundle.genes.len();
    let n = labels.len();
    let synth = ArrayView2::from_shape((n, d), cells).map_err(|e| format!("synthetic cells: {e}"))?;
    let markers = top_genes(synth, labels, &bundle.classes, &bundle.genes, n_top).map_err(|e| e.to_string())?;
    let (test_x, test_labels) = match test {
        Some(t) => {
            let step = t.n_cells().div_ceil(MAX_PLOTTED_TEST_CELLS).max(1);
            let rows: Vec<usize> = (0..t.n_cells()).step_by(step).collect();
            let x: Vec<f32> = rows.iter().flat_map(|&r| t.x[r * d..(r + 1) * d].iter().copied()).collect();
            (Some(Array2::from_shape_vec((rows.len(), d), x).map_err(|e| e.to_string())?), rows.iter().map(|&r| t.labels[r]).collect())
        }
        None => (None, Vec::new()),
    };
    let (pca, fitted_on) = match &test_x {
        Some(t) if t.nrows() >= 3 => (Pca::fit(t.view(), 2, 0), "test cells"),
        _ => (Pca::fit(synth, 2.min(n.saturating_sub(1)).max(1), 0), "synthetic cells"),
    };
    let pca = pca.map_err(|e| e.to_string())?;
    let points = |x: ArrayView2<f32>| -> Result<Vec<[f32; 2]>, String> {
        let t = pca.transform(x).map_err(|e| e.to_string())?;
        Ok(t.outer_iter().map(|r| [r[0], if r.len() > 1 { r[1] } else { 0.0 }]).collect())
    };
    Ok(Exploration {
        fitted_on: fitted_on.into(),
        variance_ratio: pca.variance_ratio.clone(),
        synthetic: points(synth)?,
        synthetic_labels: labels.to_vec(),
        test: match &test_x {
            Some(t) => points(t.view())?,
            None => Vec::new(),
        },
        test_labels,
        markers,
    })
}
