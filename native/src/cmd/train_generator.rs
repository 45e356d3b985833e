//! `scdd train-generator TRAIN.h5ad --foundation fm.scddg --label COL -o gen.scddg`: trains the
//! SCDG denoiser in the foundation's latent space; writes the generator bundle (decoder,
//! denoiser with EMA weights, class embedding, and the encoder unless `--no-encoder`) and the
//! quality report `gen.scddg.report.json`.
use crate::foundation::data::report_path;
use crate::generator::data::{train_to_file, GeneratorFiles};
use crate::generator::{GeneratorConfig, LatentScale, Sampler};
use crate::params::Check;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Labelled training cells (.h5ad).
    pub data: PathBuf,
    /// The foundation bundle (from train-foundation or import-scimilarity); needs its encoder.
    #[arg(long, value_name = "FM.scddg")]
    pub foundation: PathBuf,
    /// obs column with the condition (cell type, disease, stage...).
    #[arg(long, value_name = "COLUMN")]
    pub label: String,
    /// Output generator bundle (.scddg).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Leave the encoder out of the bundle (what a recipient of latent codes needs).
    #[arg(long)]
    pub no_encoder: bool,
    /// Denoiser hidden sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = GeneratorConfig::default().hidden)]
    pub hidden: Vec<usize>,
    /// Time/class embedding width.
    #[arg(long, default_value_t = GeneratorConfig::default().emb_dim)]
    pub emb_dim: usize,
    /// Diffusion steps T.
    #[arg(long, default_value_t = GeneratorConfig::default().timesteps)]
    pub timesteps: u32,
    #[arg(long, default_value_t = GeneratorConfig::default().beta_min)]
    pub beta_min: f64,
    #[arg(long, default_value_t = GeneratorConfig::default().beta_max)]
    pub beta_max: f64,
    #[arg(long, default_value_t = GeneratorConfig::default().lr)]
    pub lr: f64,
    #[arg(long, default_value_t = GeneratorConfig::default().weight_decay)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = GeneratorConfig::default().batch_size)]
    pub batch_size: usize,
    /// Optimisation steps.
    #[arg(long, default_value_t = GeneratorConfig::default().steps)]
    pub steps: u64,
    #[arg(long, default_value_t = GeneratorConfig::default().ema_decay)]
    pub ema_decay: f64,
    /// Fraction of each class held out for the quality report (0 = no report).
    #[arg(long, default_value_t = GeneratorConfig::default().holdout)]
    pub holdout: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Radius of the latent sphere for diffusion: auto (√latent-dim for L2-normalised latents,
    /// else 1) or a number (1 = leave the foundation's latents as they are).
    #[arg(long, default_value = "auto")]
    pub latent_scale: LatentScale,
    /// Sampler of the quality report: ddpm, ddim, ddim:K or single:T.
    #[arg(long, default_value = "ddpm")]
    pub report_sampler: Sampler,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
    #[command(flatten)]
    pub run: super::RunArgs,
}

impl Args {
    pub fn config(&self) -> GeneratorConfig {
        GeneratorConfig {
            hidden: self.hidden.clone(),
            emb_dim: self.emb_dim,
            timesteps: self.timesteps,
            beta_min: self.beta_min,
            beta_max: self.beta_max,
            lr: self.lr,
            weight_decay: self.weight_decay,
            batch_size: self.batch_size,
            steps: self.steps,
            ema_decay: self.ema_decay,
            holdout: self.holdout,
            seed: self.seed,
            report_sampler: self.report_sampler.clone(),
            latent_scale: self.latent_scale,
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let cfg = a.config().check()?;
    let ctl = a.run.control(&a.out, 1000)?;
    let files = GeneratorFiles {
        data: &a.data,
        matrix: &a.matrix.spec(),
        label: &a.label,
        foundation: &a.foundation,
        out: &a.out,
        keep_encoder: !a.no_encoder,
    };
    let run = train_to_file(&files, &cfg, &ctl)?;
    if let Some(r) = &run.quality {
        println!("{}", r.table());
    }
    let b = &run.bundle;
    println!(
        "wrote {} ({} classes of obs/{}, {}; generator id {}) and {}",
        a.out.display(),
        b.classes.len(),
        b.label_column,
        if b.spec.encoder.is_some() { "with encoder" } else { "without encoder" },
        &b.generator_id()[..16],
        report_path(&a.out).display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args as _, FromArgMatches};

    fn parse(extra: &[&str]) -> Args {
        let cmd = Args::augment_args(clap::Command::new("t"));
        let mut argv = vec!["t", "d.h5ad", "--foundation", "f", "--label", "l", "-o", "o"];
        argv.extend_from_slice(extra);
        Args::from_arg_matches(&cmd.try_get_matches_from(argv).unwrap()).unwrap()
    }

    #[test]
    fn latent_scale_flag() {
        assert_eq!(parse(&[]).config().latent_scale, LatentScale(None));
        assert_eq!(parse(&["--latent-scale", "auto"]).config().latent_scale, LatentScale(None));
        assert_eq!(parse(&["--latent-scale", "2.5"]).config().latent_scale, LatentScale(Some(2.5)));
        assert_eq!(parse(&["--report-sampler", "ddim:9"]).config().report_sampler, Sampler::Ddim { steps: 9 });
        assert_eq!(parse(&[]).config(), GeneratorConfig::default());
    }
}
