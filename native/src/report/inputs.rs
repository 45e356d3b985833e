//! What the report reads: its settings and, per dataset, the files the pipeline's stages
//! produced. The pipeline fills these; the report never imports the pipeline.
use crate::distill::Method;
use crate::evaluate::EvalParams;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[report]`: what the plots show.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSection {
    /// Marker genes per class in the heatmap.
    pub genes_per_class: usize,
    /// At most this many real test cells in the embedding plot (evenly subsampled).
    pub max_embedding_cells: usize,
}

impl Default for ReportSection {
    fn default() -> Self {
        ReportSection { genes_per_class: 5, max_embedding_cells: 4000 }
    }
}

/// The report's settings.
#[derive(Clone, Debug)]
pub struct ReportConfig {
    pub out_dir: PathBuf,
    pub seed: u64,
    pub device: String,
    /// Methods in table order.
    pub methods: Vec<Method>,
    /// The method shown in the embedding and heatmap plots.
    pub main: Method,
    /// SPC values, in table order.
    pub spc: Vec<usize>,
    pub evaluate: EvalParams,
    pub report: ReportSection,
    /// The whole run configuration, recorded in `report.json`.
    pub config: serde_json::Value,
}

/// A dataset as the report names it.
#[derive(Clone, Debug)]
pub struct DatasetInfo {
    pub name: String,
    pub path: PathBuf,
    pub label: String,
}

/// One distilled set of one dataset.
#[derive(Clone, Debug)]
pub struct MethodRun {
    pub method: Method,
    pub spc: usize,
    /// The distillation output (.scdd or .h5ad) and its `.log.json`.
    pub distill_out: PathBuf,
    pub log: PathBuf,
    /// The synthetic cells (.h5ad; decoded for code methods).
    pub cells: PathBuf,
    /// `eval.json` (an [`crate::evaluate::EvalSummary`]).
    pub eval: PathBuf,
}

/// What one dataset's stages produced: the report's input.
#[derive(Clone, Debug)]
pub struct DatasetRun {
    pub entry: DatasetInfo,
    pub train: PathBuf,
    pub test: PathBuf,
    pub split_json: PathBuf,
    pub foundation: PathBuf,
    pub generator: PathBuf,
    pub test_features: PathBuf,
    pub runs: Vec<MethodRun>,
    /// `eval.json` of the full training set.
    pub full_eval: Option<PathBuf>,
}

/// One stage of a run: ran now, or reused from an earlier run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageRecord {
    /// `split`, `foundation`, `generator`, `test-features`, `distill`, `decode`, `evaluate`.
    pub kind: String,
    /// What it was, for people: `pancreas: distill dm+dc SPC 1`.
    pub label: String,
    pub dataset: String,
    pub hash: String,
    pub dir: PathBuf,
    pub ran: bool,
    /// Wall time of the run that produced the outputs (this one, or the earlier one).
    pub seconds: f64,
}

/// `12.3 s` or `4m05s`.
pub fn fmt_secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m{:02.0}s", (s / 60.0).floor(), s % 60.0)
    }
}
