//! QC filter, then a stratified train/test split of one `.h5ad`.
//!
//! Writes `DIR/train.h5ad`, `DIR/test.h5ad` (values as read, QC-filtered cells and genes, all
//! obs columns) and `DIR/split.json` ([`SplitSummary`]). Everything is checked before `DIR` is
//! touched, and the three files are written to temporary names and renamed only when all
//! three are complete, so a failed run leaves no outputs behind.
use crate::error::{bail, Context, Result};
use crate::io::fs;
use crate::io::h5ad::{read_h5ad, write_h5ad, MatrixSpec};
use crate::params::{Check, Checked};
use scdd_core::preprocess::{
    check_non_negative, detect_count_type, qc_filter, stratified_split, QcParams, QcReport, SplitParams as CoreSplit,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What `scdd split` and the pipeline's split stage are asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitParams {
    /// The obs column holding the cell-type labels (categorical, or text).
    pub label: String,
    /// Fraction of each class that goes to the test set.
    pub test_fraction: f64,
    /// Seed of the shuffle within each class.
    pub seed: u64,
    /// QC: drop cells with fewer total counts.
    pub min_counts: f64,
    /// QC: drop genes detected in fewer cells (after the cell filter).
    pub min_cells: u64,
    #[serde(default)]
    pub matrix: MatrixSpec,
}

impl Check for SplitParams {
    fn validate(&self) -> Result<()> {
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return Err(crate::Error::param("--test-fraction", self.test_fraction, "must be between 0 and 1 (exclusive)"));
        }
        check_qc(self.min_counts)?;
        self.matrix.check()
    }
}

impl SplitParams {
    pub const DEFAULT_TEST_FRACTION: f64 = 0.3;
    pub const DEFAULT_MIN_COUNTS: f64 = 10.0;
    pub const DEFAULT_MIN_CELLS: u64 = 3;

    pub fn qc(&self) -> QcParams {
        QcParams { min_counts: self.min_counts, min_cells: self.min_cells }
    }
}

/// `--min-counts`: finite and >= 0.
pub fn check_qc(min_counts: f64) -> Result<()> {
    if !min_counts.is_finite() || min_counts < 0.0 {
        return Err(crate::Error::param("--min-counts", min_counts, "must be a finite number >= 0"));
    }
    Ok(())
}

/// `split.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitSummary {
    pub scdd_version: String,
    pub created: String,
    pub input: String,
    /// HDF5 path of the matrix that was split (`X`, `layers/<name>`, `raw/X`).
    pub matrix: String,
    pub label: String,
    pub test_fraction: f64,
    pub seed: u64,
    pub count_type: String,
    pub qc: QcSummary,
    pub n_train: usize,
    pub n_test: usize,
    pub classes: Vec<ClassCounts>,
    /// Classes with fewer than two cells after QC: not in either set.
    pub dropped_classes: Vec<DroppedClass>,
    /// Cells without a label after QC: not in either set.
    pub unlabelled: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QcSummary {
    pub min_counts: f64,
    pub min_cells: u64,
    #[serde(flatten)]
    pub report: QcReport,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassCounts {
    pub name: String,
    pub train: usize,
    pub test: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DroppedClass {
    pub name: String,
    pub cells: usize,
}

/// Runs the split and writes the three outputs; returns what `split.json` holds.
pub fn split(data: &Path, out: &Path, args: &Checked<SplitParams>) -> Result<SplitSummary> {
    let input = data.display().to_string();
    fs::check_output_dir("--out", out, &["train.h5ad", "test.h5ad", "split.json"], &[data])?;
    let qc = args.qc();
    let source = args.matrix.source();
    let opts = args.matrix.read_options();
    let ds = read_h5ad(data, &opts)?;
    let matrix = source.to_string();

    // Checks before any work: counts must be non-negative, the label must be categorical.
    check_non_negative(&ds.x, &matrix).map_err(|e| {
        crate::error::err!("{input}: {e}; split needs raw counts (choose them with --layer NAME or --raw)")
    })?;
    // Missing and numeric columns are refused here (text columns are categorised).
    ds.obs.labels(&args.label).with_context(|| input.clone())?;

    let (filtered, _kept_rows, report) = qc_filter(&ds, &qc);
    if report.cells_kept == 0 {
        bail!("{input}: QC removed every cell (none has --min-counts {} total counts)", qc.min_counts);
    }
    if report.genes_kept == 0 {
        bail!("{input}: QC removed every gene (none is detected in --min-cells {} cells)", qc.min_cells);
    }
    let labels = filtered.obs.labels(&args.label).with_context(|| input.clone())?;
    let sp = stratified_split(&labels, &CoreSplit { test_fraction: args.test_fraction, seed: args.seed })
        .with_context(|| input.clone())?;

    let count = |rows: &[usize]| {
        let mut c = vec![0usize; labels.classes.len()];
        for &r in rows {
            if let Some(id) = labels.ids[r] {
                c[id as usize] += 1;
            }
        }
        c
    };
    let (tr, te) = (count(&sp.train), count(&sp.test));
    let classes = labels
        .classes
        .iter()
        .enumerate()
        .filter(|(_, name)| sp.classes.contains(name))
        .map(|(i, name)| ClassCounts { name: name.clone(), train: tr[i], test: te[i] })
        .collect();
    let summary = SplitSummary {
        scdd_version: scdd_core::SCDD_VERSION.to_string(),
        created: fs::now_rfc3339(),
        input: input.clone(),
        matrix,
        label: args.label.clone(),
        test_fraction: args.test_fraction,
        seed: args.seed,
        count_type: detect_count_type(&filtered.x).to_string(),
        qc: QcSummary { min_counts: qc.min_counts, min_cells: qc.min_cells, report },
        n_train: sp.train.len(),
        n_test: sp.test.len(),
        classes,
        dropped_classes: sp.dropped_classes.iter().map(|(n, c)| DroppedClass { name: n.clone(), cells: *c }).collect(),
        unlabelled: sp.unlabelled,
    };

    let train = filtered.select_cells(&sp.train);
    let test = filtered.select_cells(&sp.test);
    let uns = |part: &str| -> BTreeMap<String, String> {
        BTreeMap::from([
            ("scdd_version".to_string(), summary.scdd_version.clone()),
            ("scdd_split".to_string(), part.to_string()),
            ("scdd_source".to_string(), input.clone()),
            ("scdd_label".to_string(), args.label.clone()),
            ("scdd_seed".to_string(), args.seed.to_string()),
        ])
    };
    let mut json = serde_json::to_string_pretty(&summary)?;
    json.push('\n');
    write_all_or_nothing(
        out,
        &[
            ("train.h5ad", &|p: &Path| write_h5ad(p, &train, &uns("train"))),
            ("test.h5ad", &|p: &Path| write_h5ad(p, &test, &uns("test"))),
            ("split.json", &|p: &Path| fs::write_atomic(p, json.as_bytes())),
        ],
    )?;
    Ok(summary)
}

type Writer<'a> = &'a dyn Fn(&Path) -> Result<()>;

/// Writes every `(name, writer)` to a temporary file in `dir`, then renames them all. On any
/// error the temporary files are removed and nothing appears under the final names.
fn write_all_or_nothing(dir: &Path, files: &[(&str, Writer<'_>)]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create directory", dir.display()))?;
    let mut done: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut result = Ok(());
    for (name, write) in files {
        let fin = dir.join(name);
        let tmp = fs::temp_sibling(&dir.join(format!("{name}.part")));
        if let Err(e) = write(&tmp) {
            result = Err(e);
            break;
        }
        done.push((tmp, fin));
    }
    if result.is_ok() {
        for (tmp, fin) in &done {
            if let Err(e) = std::fs::rename(tmp, fin) {
                result = Err(crate::Error::from(e).context(format!("renaming {} to {}", tmp.display(), fin.display())));
                break;
            }
        }
    }
    if result.is_err() {
        for (tmp, _) in &done {
            let _ = std::fs::remove_file(tmp);
        }
    }
    result
}

/// Reads a `split.json` back.
pub fn read_summary(path: &Path) -> Result<SplitSummary> {
    serde_json::from_slice(&fs::read(path)?).with_context(|| format!("{}: not a split summary", path.display()))
}
