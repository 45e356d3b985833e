//! Reading a training file for the foundation autoencoder.
use super::TrainData;
use crate::error::{bail, Context, Result};
use crate::io::h5ad::{read_h5ad, ReadOptions};
use scdd_core::preprocess;
use std::path::{Path, PathBuf};

/// Reads a training file as log-normalised cells, drops genes seen in fewer than `min_cells`
/// cells, and resolves the label column.
pub fn load_training_data(path: &Path, opts: &ReadOptions, label: Option<&str>, min_cells: u64) -> Result<TrainData> {
    let mut ds = read_h5ad(path, opts)?;
    let field = format!("{}:{}", path.display(), opts.matrix);
    if ds.n_cells() == 0 {
        bail!("{field}: the training set is empty (0 cells)");
    }
    preprocess::check_non_negative(&ds.x, &field)?;
    preprocess::to_log_normalized(&mut ds.x, 1e4, &field)?;
    if min_cells > 0 {
        let keep: Vec<bool> = ds.x.col_nnz().iter().map(|&n| n >= min_cells).collect();
        if !keep.iter().any(|&k| k) {
            bail!("{field}: no gene is detected in at least {min_cells} cells (--min-cells)");
        }
        ds = ds.select_genes(&keep);
    }
    let labels = match label {
        Some(col) => {
            let l = ds.obs.labels(col).with_context(|| path.display().to_string())?;
            Some((col.to_string(), l.ids, l.classes))
        }
        None => None,
    };
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(TrainData { name, x: ds.x, genes: ds.genes, labels })
}

/// `OUT.report.json`, the report a trainer writes next to its bundle.
pub fn report_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".report.json");
    PathBuf::from(s)
}

/// `scdd train-foundation` as a library call: reads `data` (matrix and label as given), trains,
/// writes the bundle to `out` and its report to `OUT.report.json`, and removes the checkpoint.
/// `out` is checked before any work (extension, not an input, not a directory).
pub fn train_to_file(
    data: &Path,
    read: &crate::io::h5ad::MatrixSpec,
    label: Option<&str>,
    out: &Path,
    cfg: &crate::params::Checked<super::FoundationConfig>,
    ctl: &crate::train::TrainControl,
) -> Result<super::FoundationRun> {
    crate::io::fs::check_output("--out", out, &["scddg"], &[data])?;
    read.check()?;
    let train = load_training_data(data, &read.read_options(), label, cfg.min_cells)?;
    if ctl.progress {
        eprintln!("{}: {} cells × {} genes (genes detected in >= {} cells)", data.display(), train.x.n_rows(), train.x.n_cols(), cfg.min_cells);
    }
    let run = super::train_foundation(&train, cfg, ctl)?;
    crate::io::fs::write_atomic(out, &run.bundle.to_bytes())?;
    crate::io::fs::write_json(
        &report_path(out),
        &serde_json::json!({ "input": data.display().to_string(), "config": &**cfg, "report": run.report }),
    )?;
    if let Some(c) = &ctl.checkpoint {
        let _ = std::fs::remove_file(c);
    }
    Ok(run)
}
