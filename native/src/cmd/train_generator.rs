//! `scdd train-generator TRAIN.h5ad --foundation fm.scddg --label COL -o gen.scddg`: trains the
//! SCDG denoiser in the foundation's latent space; writes the generator bundle (decoder,
//! denoiser with EMA weights, class embedding, and the encoder unless `--no-encoder`) and the
//! quality report `gen.scddg.report.json`.
use crate::cmd::train_foundation::report_path;
use crate::generator::{train_generator, GenData, GeneratorConfig};
use crate::h5ad::ReadOptions;
use crate::train::{Outcome, RunArgs};
use anyhow::{Context, Result};
use scdd_core::bundle::GeneratorBundle;
use scdd_core::graph::NoiseSchedule;
use std::path::{Path, PathBuf};

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
    #[arg(long, default_value_t = NoiseSchedule::default().steps)]
    pub timesteps: u32,
    #[arg(long, default_value_t = NoiseSchedule::default().beta_min)]
    pub beta_min: f64,
    #[arg(long, default_value_t = NoiseSchedule::default().beta_max)]
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
    pub report_sampler: crate::generator::Sampler,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

impl Args {
    pub fn config(&self) -> GeneratorConfig {
        GeneratorConfig {
            hidden: self.hidden.clone(),
            emb_dim: self.emb_dim,
            schedule: NoiseSchedule { beta_min: self.beta_min, beta_max: self.beta_max, steps: self.timesteps },
            lr: self.lr,
            weight_decay: self.weight_decay,
            batch_size: self.batch_size,
            steps: self.steps,
            ema_decay: self.ema_decay,
            holdout: self.holdout,
            seed: self.seed,
            report_sampler: self.report_sampler.clone(),
            latent_scale: self.latent_scale.0,
        }
    }
}

/// `--latent-scale auto|S`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatentScale(pub Option<f32>);

impl std::str::FromStr for LatentScale {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "auto" {
            return Ok(LatentScale(None));
        }
        match s.parse::<f32>() {
            Ok(v) if v > 0.0 && v.is_finite() => Ok(LatentScale(Some(v))),
            _ => Err(format!("{s:?}: use auto or a number > 0")),
        }
    }
}

pub fn load_bundle(path: &Path) -> Result<GeneratorBundle> {
    let bytes = crate::fsutil::read(path)?;
    GeneratorBundle::from_bytes(&bytes).with_context(|| path.display().to_string())
}

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
) -> Result<(GenData, scdd_core::preprocess::GeneAlignment)> {
    let input = crate::prep::load_model_input(path, opts, &bundle.genes, &bundle.spec.space)?;
    if !quiet {
        eprintln!("{}: {}", path.display(), crate::prep::describe(&input));
    }
    let l = input.data.obs.labels(label).with_context(|| path.display().to_string())?;
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let data = GenData { name, x: input.data.x, label_column: label.to_string(), labels: l.ids, classes: l.classes };
    Ok((data, input.alignment))
}

pub fn run(a: Args) -> Result<()> {
    let cfg = a.config();
    cfg.validate()?;
    let ctl = a.run.control(&a.out, 1000)?;
    let foundation = load_bundle(&a.foundation)?;
    let opts = a.matrix.read_options();
    let (data, alignment) = load_gen_data_aligned(&a.data, &opts, &foundation, &a.label, a.run.quiet)?;
    match train_generator(&foundation, &data, &cfg, &ctl, !a.no_encoder)? {
        Outcome::Interrupted { step } => {
            eprintln!("stopped after step {step}; checkpoint {}; continue with --resume", ctl.checkpoint.as_ref().unwrap().display());
        }
        Outcome::Finished(crate::generator::GeneratorRun { bundle, quality: report, .. }) => {
            crate::fsutil::write_atomic(&a.out, &bundle.to_bytes())?;
            if let Some(c) = &ctl.checkpoint {
                let _ = std::fs::remove_file(c);
            }
            let foundation_report: Option<serde_json::Value> =
                foundation.metadata.get("foundation.report").and_then(|s| serde_json::from_str(s).ok());
            let rp = report_path(&a.out);
            crate::fsutil::write_json(&rp, &serde_json::json!({
                "input": a.data.display().to_string(),
                "foundation": a.foundation.display().to_string(),
                "generator_id": bundle.generator_id(),
                "config": cfg,
                "gene_alignment": alignment,
                "quality": report,
                "foundation_report": foundation_report,
            }))?;
            if let Some(r) = &report {
                println!("{}", r.table());
            }
            println!(
                "wrote {} ({} classes of obs/{}, {}; generator id {}) and {}",
                a.out.display(),
                bundle.classes.len(),
                bundle.label_column,
                if bundle.spec.encoder.is_some() { "with encoder" } else { "without encoder" },
                &bundle.generator_id()[..16],
                rp.display()
            );
        }
    }
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
        assert_eq!(parse(&[]).config().latent_scale, None);
        assert_eq!(parse(&["--latent-scale", "auto"]).config().latent_scale, None);
        assert_eq!(parse(&["--latent-scale", "2.5"]).config().latent_scale, Some(2.5));
        assert_eq!(parse(&["--report-sampler", "ddim:9"]).config().report_sampler, crate::generator::Sampler::Ddim { steps: 9 });
        assert_eq!(parse(&[]).config(), GeneratorConfig::default());
    }
}
