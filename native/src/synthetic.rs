//! Synthetic cells: decoding latent codes with the CPU reference generator, and the one writer
//! of every synthetic `.h5ad` (`scdd decode`, `scdd distill`'s cell baselines, the pipeline),
//! so they all carry the same metadata in `uns`: the expression space (`scdd_space`, read back
//! by [`crate::io::prep`]), the method, SPC, source dataset and generator id.
use crate::error::Result;
use crate::io::{h5ad, prep};
use ndarray::Array2;
use scdd_core::bundle::GeneratorBundle;
use scdd_core::codes::LatentCodes;
use scdd_core::dataset::Dataset;
use scdd_core::matrix::CsrMatrix;
use scdd_core::obs::{Column, ObsTable};
use scdd_core::reference::CpuModel;
use std::collections::BTreeMap;
use std::path::Path;

/// What a synthetic file says about itself.
#[derive(Clone, Debug, Default)]
pub struct SyntheticMeta {
    /// `dm+dc`, `class-mean`...
    pub method: String,
    pub spc: Option<u32>,
    /// Name of the real dataset it was distilled from.
    pub source: String,
    /// The generator's content id (for decoded codes).
    pub generator_id: Option<String>,
}

impl SyntheticMeta {
    /// The metadata of decoded codes.
    pub fn of_codes(codes: &LatentCodes) -> Self {
        SyntheticMeta {
            method: codes.provenance.method.clone(),
            spc: Some(codes.spc),
            source: codes.provenance.source_name.clone(),
            generator_id: Some(codes.generator_id.clone()),
        }
    }
}

/// Decodes codes into a dataset (cells named `syn_<class>_<k>`, label column as in the codes):
/// one denoising step at the codes' timestep, the decoder, and the projection onto valid cells
/// (non-negative, `Σ expm1 = target_sum`).
pub fn decode(codes: &LatentCodes, bundle: &GeneratorBundle, codes_path: &Path) -> Result<Dataset> {
    codes.compatibility(bundle).map_err(|reason| crate::Error::Incompatible { path: codes_path.to_path_buf(), reason })?;
    let model = CpuModel::from_bundle(bundle)?;
    let z = Array2::from_shape_vec((codes.n_codes(), codes.latent_dim()), codes.codes.to_f32()?)?;
    let x = model.generate(&z, codes.timestep, &codes.labels)?;
    dataset(&x, &codes.labels, &codes.classes, &codes.label_column, &bundle.genes, "synthetic")
}

/// Wraps dense synthetic cells with their labels as a dataset.
pub fn dataset(x: &Array2<f32>, labels: &[u32], classes: &[String], label_column: &str, genes: &[String], name: &str) -> Result<Dataset> {
    let (n, g) = x.dim();
    let values: Vec<f32> = x.iter().copied().collect();
    let m = CsrMatrix::from_dense(n, g, &values, "synthetic")?;
    let mut counters = vec![0usize; classes.len()];
    let index = labels
        .iter()
        .map(|&l| {
            counters[l as usize] += 1;
            format!("syn_{}_{}", classes[l as usize].replace(' ', "_"), counters[l as usize] - 1)
        })
        .collect();
    let mut obs = ObsTable { index, columns: vec![] };
    obs.set(
        label_column,
        Column::Categorical { codes: labels.iter().map(|&l| l as i32).collect(), categories: classes.to_vec(), ordered: false },
    )?;
    Ok(Dataset::new(name, m, genes.to_vec(), obs)?)
}

/// Writes synthetic cells (atomically) with the metadata every synthetic file carries.
pub fn write(path: &Path, ds: &Dataset, bundle: &GeneratorBundle, meta: &SyntheticMeta) -> Result<()> {
    let mut uns = BTreeMap::new();
    uns.insert("scdd_values".into(), format!("log1p of counts normalised to {} per cell", bundle.spec.space.target_sum));
    uns.insert(prep::SPACE_KEY.into(), prep::space_tag(&bundle.spec.space));
    uns.insert("scdd_method".into(), meta.method.clone());
    uns.insert("scdd_source".into(), meta.source.clone());
    if let Some(spc) = meta.spc {
        uns.insert("scdd_spc".into(), spc.to_string());
    }
    if let Some(id) = &meta.generator_id {
        uns.insert("scdd_generator_id".into(), id.clone());
    }
    h5ad::write_h5ad(path, ds, &uns)
}

/// Decodes a code file with `bundle` and writes the cells to `out`; returns the dataset.
pub fn decode_to_file(codes: &LatentCodes, codes_path: &Path, bundle: &GeneratorBundle, out: &Path) -> Result<Dataset> {
    let ds = decode(codes, bundle, codes_path)?;
    write(out, &ds, bundle, &SyntheticMeta::of_codes(codes))?;
    Ok(ds)
}

/// What [`recipient_bundle`] wrote.
#[derive(Debug, serde::Serialize)]
pub struct RecipientBundle {
    pub bytes_before: usize,
    pub bytes_after: usize,
    pub generator_id: String,
    /// Set for a half-precision copy: the id codes name to be decoded by it.
    pub f16_of: Option<String>,
    pub tensors_dropped: usize,
    /// Largest difference between the cells of `check` decoded with the copy and with the
    /// original (0 unless `f16`).
    pub max_abs_diff: Option<f32>,
}

/// Writes the decoder-only copy of `bundle` for recipients (see
/// [`GeneratorBundle::for_recipients`]) to `out`; with `check`, decodes those codes with both
/// and reports the largest difference.
pub fn recipient_bundle(bundle: &GeneratorBundle, f16: bool, check: Option<(&LatentCodes, &Path)>, out: &Path) -> Result<RecipientBundle> {
    let slim = bundle.for_recipients(f16)?;
    let max_abs_diff = match check {
        Some((codes, path)) => {
            let a = decode(codes, bundle, path)?;
            let b = decode(codes, &slim, path)?;
            let (a, b) = (a.x.to_dense(), b.x.to_dense());
            Some(a.iter().zip(b.iter()).fold(0f32, |m, (x, y)| m.max((x - y).abs())))
        }
        None => None,
    };
    let bytes = slim.to_bytes();
    crate::io::fs::write_atomic(out, &bytes)?;
    Ok(RecipientBundle {
        bytes_before: bundle.to_bytes().len(),
        bytes_after: bytes.len(),
        generator_id: slim.generator_id(),
        f16_of: slim.metadata.get(scdd_core::bundle::F16_OF).cloned(),
        tensors_dropped: bundle.tensors.len() - slim.tensors.len(),
        max_abs_diff,
    })
}
