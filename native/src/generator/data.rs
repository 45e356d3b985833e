//! Reading labelled training cells for SCDG, aligned to the foundation's genes.
use super::GenData;
use crate::error::{Context, Result};
use crate::io::h5ad::ReadOptions;
use crate::io::prep;
use scdd_core::bundle::GeneratorBundle;
use scdd_core::preprocess::GeneAlignment;
use std::path::Path;

/// Reads labelled cells aligned to `bundle`'s genes (missing genes → 0, overlap reported).
pub fn load_gen_data(path: &Path, opts: &ReadOptions, bundle: &GeneratorBundle, label: &str, quiet: bool) -> Result<GenData> {
    Ok(load_gen_data_aligned(path, opts, bundle, label, quiet)?.0)
}

/// [`load_gen_data`] plus the gene alignment report.
pub fn load_gen_data_aligned(
    path: &Path,
    opts: &ReadOptions,
    bundle: &GeneratorBundle,
    label: &str,
    quiet: bool,
) -> Result<(GenData, GeneAlignment)> {
    let input = prep::load_model_input(path, opts, &bundle.genes, &bundle.spec.space)?;
    if !quiet {
        eprintln!("{}: {}", path.display(), prep::describe(&input));
    }
    let l = input.data.obs.labels(label).with_context(|| path.display().to_string())?;
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let data = GenData { name, x: input.data.x, label_column: label.to_string(), labels: l.ids, classes: l.classes };
    Ok((data, input.alignment))
}

/// What `scdd train-generator` reads and writes.
pub struct GeneratorFiles<'a> {
    /// Labelled training cells.
    pub data: &'a Path,
    pub matrix: &'a crate::io::h5ad::MatrixSpec,
    pub label: &'a str,
    /// The foundation bundle (with its encoder).
    pub foundation: &'a Path,
    /// The generator bundle to write (`.scddg`).
    pub out: &'a Path,
    /// Keep the encoder in the written bundle.
    pub keep_encoder: bool,
}

/// `scdd train-generator` as a library call: reads the foundation and the labelled cells,
/// trains SCDG, writes the generator bundle to `out` and its quality report to
/// `OUT.report.json`, and removes the checkpoint. `out` is checked before any work.
pub fn train_to_file(
    files: &GeneratorFiles,
    cfg: &crate::params::Checked<super::GeneratorConfig>,
    ctl: &crate::train::TrainControl,
) -> Result<super::GeneratorRun> {
    let GeneratorFiles { data, matrix: read, label, foundation: foundation_path, out, keep_encoder } = *files;
    crate::io::fs::check_output("--out", out, &["scddg"], &[data, foundation_path])?;
    read.check()?;
    let foundation = crate::io::artifacts::load_bundle(foundation_path)?;
    if foundation.spec.encoder.is_none() {
        return Err(crate::Error::MissingEncoder { path: foundation_path.to_path_buf(), needed: "train-generator".into() });
    }
    let (train, alignment) = load_gen_data_aligned(data, &read.read_options(), &foundation, label, !ctl.progress)?;
    let run = super::train_generator(&foundation, &train, cfg, ctl, keep_encoder)?;
    crate::io::fs::write_atomic(out, &run.bundle.to_bytes())?;
    if let Some(c) = &ctl.checkpoint {
        let _ = std::fs::remove_file(c);
    }
    let foundation_report: Option<serde_json::Value> =
        foundation.metadata.get("foundation.report").and_then(|s| serde_json::from_str(s).ok());
    crate::io::fs::write_json(
        &crate::foundation::data::report_path(out),
        &serde_json::json!({
            "input": data.display().to_string(),
            "foundation": foundation_path.display().to_string(),
            "generator_id": run.bundle.generator_id(),
            "config": &**cfg,
            "gene_alignment": alignment,
            "quality": run.quality,
            "foundation_report": foundation_report,
        }),
    )?;
    Ok(run)
}
