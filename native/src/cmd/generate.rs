//! `scdd generate GEN.scddg --class NAME -n 100 -o cells.h5ad`: new cells from the generator
//! (see [`crate::generator::output`]).
use crate::generator::output::{generate_to_file, GenerateParams};
use crate::generator::Sampler;
use crate::nn::device::DeviceArg;
use crate::params::Check;
use anyhow::Result;
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

impl Args {
    pub fn params(&self) -> GenerateParams {
        let sampler = match self.single_step {
            Some(t) => Sampler::SingleStep { t },
            None => match self.sampler {
                SamplerArg::Ddim => Sampler::Ddim { steps: self.steps },
                SamplerArg::Ddpm => Sampler::Ddpm,
            },
        };
        GenerateParams {
            classes: self.classes.clone(),
            n: self.n,
            sampler,
            seed: self.seed,
            min_value: self.min_value,
            device: self.device,
            memory_budget: None,
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let p = a.params().check()?;
    let (r, c, ids) = generate_to_file(&a.generator, &p, &a.out)?;
    println!("wrote {}: {} cells ({} per class, {} classes) × {} genes, {}", a.out.display(), r, a.n, ids.len(), c, p.sampler);
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
