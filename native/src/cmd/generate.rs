//! `scdd generate gen.scddg --class NAME -n N -o cells.h5ad`: samples new cells of a class from
//! noise with the generator (the full DDPM ancestral chain by default; `--sampler ddim` is faster;
//! `--single-step T` for one denoising step from noise at timestep T) and writes them as
//! log-normalised expression.
use crate::cmd::train_generator::load_bundle;
use crate::device::DeviceArg;
use crate::generator::{sample_cells, Sampler};
use crate::nn::TchModel;
use anyhow::{bail, Result};
use scdd_core::dataset::Dataset;
use scdd_core::matrix::CsrMatrix;
use scdd_core::obs::{Column, ObsTable};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum SamplerArg {
    /// Deterministic DDIM over --steps timesteps.
    Ddim,
    /// Ancestral sampling through all T steps (DDPM posterior with the predicted z0).
    Ddpm,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The generator bundle (.scddg); the encoder is not needed.
    pub generator: PathBuf,
    /// Class to generate (repeat or comma-separate for several; `all` = every class).
    #[arg(long = "class", value_name = "NAME", required = true, value_delimiter = ',')]
    pub classes: Vec<String>,
    /// Cells per class.
    #[arg(short = 'n', long, default_value_t = 100)]
    pub n: usize,
    /// Output .h5ad.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "ddpm")]
    pub sampler: SamplerArg,
    /// DDIM steps.
    #[arg(long, default_value_t = 50)]
    pub steps: u32,
    /// One denoising step from pure noise at this timestep instead of a reverse chain.
    #[arg(long, value_name = "T", conflicts_with = "sampler")]
    pub single_step: Option<u32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Values below this are written as zeros (the decoder's Softplus output is never exactly 0).
    #[arg(long, default_value_t = 1e-3)]
    pub min_value: f32,
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
}

pub fn run(a: Args) -> Result<()> {
    let bundle = load_bundle(&a.generator)?;
    if bundle.spec.denoiser.is_none() {
        bail!("{}: is a foundation bundle without a denoiser; train one with `scdd train-generator`", a.generator.display());
    }
    if a.n == 0 {
        bail!("-n 0: nothing to generate");
    }
    let mut ids = Vec::new();
    for name in &a.classes {
        if name == "all" {
            ids.extend(0..bundle.classes.len() as u32);
            continue;
        }
        match bundle.classes.iter().position(|c| c == name) {
            Some(i) => ids.push(i as u32),
            None => bail!(
                "--class {name:?}: not a class of {} (obs/{} classes: {})",
                a.generator.display(),
                bundle.label_column,
                bundle.classes.join(", ")
            ),
        }
    }
    let sampler = match a.single_step {
        Some(t) => Sampler::SingleStep { t },
        None => match a.sampler {
            SamplerArg::Ddim => Sampler::Ddim { steps: a.steps },
            SamplerArg::Ddpm => Sampler::Ddpm,
        },
    };
    let device = a.device.resolve()?;
    let mut model = TchModel::from_bundle(&bundle, device)?;
    model.freeze();
    let per_cell: Vec<u32> = ids.iter().flat_map(|&c| std::iter::repeat_n(c, a.n)).collect();
    let cells = sample_cells(&model, &per_cell, &sampler, a.seed)?;
    let mut x = crate::nn::to_array(&cells);
    x.mapv_inplace(|v| if v < a.min_value { 0.0 } else { v });
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
            bundle.spec.space.target_sum, a.min_value
        ),
    );
    uns.insert(crate::prep::SPACE_KEY.to_string(), crate::prep::space_tag(&bundle.spec.space));
    uns.insert("scdd_generator_id".to_string(), bundle.generator_id());
    uns.insert("scdd_sampler".to_string(), sampler.to_string());
    uns.insert("scdd_seed".to_string(), a.seed.to_string());
    uns.insert("scdd_version".to_string(), scdd_core::SCDD_VERSION.to_string());
    crate::h5ad::write_h5ad(&a.out, &ds, &uns)?;
    println!(
        "wrote {}: {} cells ({} per class: {}) × {} genes, {}",
        a.out.display(),
        r,
        a.n,
        ids.iter().map(|&i| bundle.classes[i as usize].as_str()).collect::<Vec<_>>().join(", "),
        c,
        sampler
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args as _, FromArgMatches};

    #[test]
    fn flags_parse() {
        let p = |extra: &[&str]| {
            let mut argv = vec!["t", "g.scddg", "--class", "A,B", "-o", "o.h5ad"];
            argv.extend_from_slice(extra);
            Args::augment_args(clap::Command::new("t")).try_get_matches_from(argv).map(|m| Args::from_arg_matches(&m).unwrap())
        };
        let a = p(&["--single-step", "5"]).unwrap();
        assert_eq!((a.classes.len(), a.single_step, a.n), (2, Some(5), 100));
        assert!(p(&["--single-step", "5", "--sampler", "ddim"]).is_err());
    }
}
