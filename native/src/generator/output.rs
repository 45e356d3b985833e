//! `scdd generate` as a library call: sample new cells of some classes from a generator
//! bundle and write them as an `.h5ad`.
use super::{sample_cells, Sampler};
use crate::error::{bail, Result};
use crate::io::artifacts::load_bundle;
use crate::io::{fs, h5ad, prep};
use crate::nn::device::DeviceArg;
use crate::nn::TchModel;
use crate::params::{self, Check, Checked};
use crate::Error;
use scdd_core::dataset::Dataset;
use scdd_core::matrix::CsrMatrix;
use scdd_core::obs::{Column, ObsTable};
use std::collections::BTreeMap;
use std::path::Path;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateParams {
    /// Class names (`all` = every class of the bundle).
    pub classes: Vec<String>,
    /// Cells per class.
    pub n: usize,
    pub sampler: Sampler,
    pub seed: u64,
    /// Values below this are written as zeros.
    pub min_value: f32,
    pub device: DeviceArg,
    /// Memory the run may use, in bytes (default: what the system has available).
    pub memory_budget: Option<f64>,
}

impl Check for GenerateParams {
    fn validate(&self) -> Result<()> {
        params::count("-n", self.n as u64, 1, 100_000_000)?;
        params::non_negative("--min-value", self.min_value as f64)?;
        match self.sampler {
            Sampler::Ddim { steps: 0 } => return Err(Error::param("--steps", 0, "must be at least 1")),
            Sampler::SingleStep { t: 0 } => return Err(Error::param("--single-step", 0, "must be at least 1")),
            _ => {}
        }
        Ok(())
    }
}

/// Generates the cells and writes `out`; returns (cells, genes, class ids per cell).
pub fn generate_to_file(bundle_path: &Path, p: &Checked<GenerateParams>, out: &Path) -> Result<(usize, usize, Vec<u32>)> {
    fs::check_output("--out", out, &["h5ad"], &[bundle_path])?;
    let bundle = load_bundle(bundle_path)?;
    if bundle.spec.denoiser.is_none() {
        return Err(Error::Incompatible {
            path: bundle_path.to_path_buf(),
            reason: "is a foundation bundle without a denoiser; train one with `scdd train-generator`".into(),
        });
    }
    let mut ids = Vec::new();
    for name in &p.classes {
        if name == "all" {
            ids.extend(0..bundle.classes.len() as u32);
            continue;
        }
        match bundle.classes.iter().position(|c| c == name) {
            Some(i) => ids.push(i as u32),
            None => bail!(
                "--class {name:?}: not a class of {} (obs/{} classes: {})",
                bundle_path.display(),
                bundle.label_column,
                bundle.classes.join(", ")
            ),
        }
    }
    let big_t = bundle.spec.schedule.steps;
    if let Sampler::SingleStep { t } = p.sampler {
        if t > big_t {
            return Err(Error::param("--single-step", t, format!("must be in 1..={big_t}")));
        }
    }
    // The cells (dense, then sparse) and the latents, before anything runs.
    let cells = ids.len() * p.n;
    let need = cells as f64 * (bundle.genes.len() as f64 * 4.0 * 3.0 + bundle.spec.latent_dim as f64 * 4.0 * 8.0);
    if let Some(budget) = p.memory_budget.or_else(crate::train::memory_budget_bytes) {
        if need > budget {
            return Err(Error::TooLarge {
                what: format!("-n {} × {} classes ({cells} cells × {} genes)", p.n, ids.len(), bundle.genes.len()),
                need_mb: need / 1e6,
                budget_mb: budget / 1e6,
                hint: "lower -n".into(),
            });
        }
    }
    let device = p.device.resolve()?;
    let mut model = TchModel::from_bundle(&bundle, device)?;
    model.freeze();
    let per_cell: Vec<u32> = ids.iter().flat_map(|&c| std::iter::repeat_n(c, p.n)).collect();
    let cells = sample_cells(&model, &per_cell, &p.sampler, p.seed)?;
    let mut x = crate::nn::to_array(&cells);
    let min_value = p.min_value;
    x.mapv_inplace(|v| if v < min_value { 0.0 } else { v });
    let (r, c) = x.dim();
    let x = CsrMatrix::from_dense(r, c, x.as_slice().expect("contiguous"), "generated")?;
    let index: Vec<String> = (0..r).map(|i| format!("generated_{i}")).collect();
    let mut obs = ObsTable { index, columns: vec![] };
    let col = if bundle.label_column.is_empty() { "class".to_string() } else { bundle.label_column.clone() };
    obs.set(
        &col,
        Column::Categorical { codes: per_cell.iter().map(|&c| c as i32).collect(), categories: bundle.classes.clone(), ordered: false },
    )?;
    let ds = Dataset::new("generated", x, bundle.genes.clone(), obs)?;
    let mut uns = BTreeMap::new();
    uns.insert(
        "scdd_values".to_string(),
        format!(
            "log-normalised expression, log1p(counts per {} per cell), as decoded by the generator; values below {} written as 0",
            bundle.spec.space.target_sum, p.min_value
        ),
    );
    uns.insert(prep::SPACE_KEY.to_string(), prep::space_tag(&bundle.spec.space));
    uns.insert("scdd_generator_id".to_string(), bundle.generator_id());
    uns.insert("scdd_sampler".to_string(), p.sampler.to_string());
    uns.insert("scdd_seed".to_string(), p.seed.to_string());
    uns.insert("scdd_version".to_string(), scdd_core::SCDD_VERSION.to_string());
    h5ad::write_h5ad(out, &ds, &uns)?;
    Ok((r, c, ids))
}
