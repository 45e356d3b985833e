//! `scdd decode`: latent codes → synthetic cells (.h5ad), with the CPU reference generator.
use crate::{fsutil, h5ad};
use anyhow::{bail, Context, Result};
use ndarray::Array2;
use scdd_core::bundle::GeneratorBundle;
use scdd_core::codes::LatentCodes;
use scdd_core::dataset::Dataset;
use scdd_core::matrix::CsrMatrix;
use scdd_core::obs::{Column, ObsTable};
use scdd_core::reference::CpuModel;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Latent-code file (.scdd).
    pub codes: PathBuf,
    /// Generator bundle (.scddg) the codes were distilled with (the encoder may be absent).
    #[arg(long, short = 'g')]
    pub generator: PathBuf,
    /// Output .h5ad (log-normalised synthetic cells).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let codes = load_codes(&a.codes)?;
    let bundle = load_bundle(&a.generator)?;
    let ds = decode(&codes, &bundle, &a.codes)?;
    let mut uns = BTreeMap::new();
    uns.insert("scdd_values".into(), format!("log1p of counts normalised to {} per cell", bundle.spec.space.target_sum));
    uns.insert(crate::prep::SPACE_KEY.into(), crate::prep::space_tag(&bundle.spec.space));
    uns.insert("scdd_generator_id".into(), codes.generator_id.clone());
    uns.insert("scdd_method".into(), codes.provenance.method.clone());
    uns.insert("scdd_source".into(), codes.provenance.source_name.clone());
    h5ad::write_h5ad(&a.out, &ds, &uns)?;
    println!(
        "decoded {} codes ({} classes, SPC {}) into {} × {} cells → {}",
        codes.n_codes(),
        codes.classes.len(),
        codes.spc,
        ds.n_cells(),
        ds.n_genes(),
        a.out.display()
    );
    Ok(())
}

pub fn load_codes(path: &Path) -> Result<LatentCodes> {
    LatentCodes::from_bytes(&fsutil::read(path)?).with_context(|| path.display().to_string())
}

pub fn load_bundle(path: &Path) -> Result<GeneratorBundle> {
    GeneratorBundle::from_bytes(&fsutil::read(path)?).with_context(|| path.display().to_string())
}

/// Decodes codes into a dataset (cells named `syn_<class>_<k>`, label column as in the codes).
pub fn decode(codes: &LatentCodes, bundle: &GeneratorBundle, codes_path: &Path) -> Result<Dataset> {
    let id = bundle.generator_id();
    if codes.generator_id != id {
        bail!(
            "{}: made for generator {} but {} is generator {}; decode with the bundle the codes were distilled with",
            codes_path.display(),
            &codes.generator_id[..12.min(codes.generator_id.len())],
            "the given bundle",
            &id[..12]
        );
    }
    if codes.classes != bundle.classes {
        bail!("{}: class list differs from the generator's", codes_path.display());
    }
    let model = CpuModel::from_bundle(bundle)?;
    let z = Array2::from_shape_vec((codes.n_codes(), codes.latent_dim()), codes.codes.to_f32()?)?;
    let x = model.generate(&z, codes.timestep, &codes.labels)?;
    let x = x.mapv(|v| v.max(0.0));
    synthetic_dataset(&x, &codes.labels, &codes.classes, &codes.label_column, &bundle.genes, "synthetic")
}

/// Wraps dense synthetic cells with their labels as a dataset.
pub fn synthetic_dataset(
    x: &Array2<f32>,
    labels: &[u32],
    classes: &[String],
    label_column: &str,
    genes: &[String],
    name: &str,
) -> Result<Dataset> {
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
