//! `scdd distill`: latent-code distillation (DM / DC / DM+DC) and its baselines
//! (see [`crate::distill`]).
use crate::distill::output::{distill_to_file, DistillIo};
use crate::distill::{DistillParams, Method};
use crate::io::artifacts::load_bundle;
use crate::params::Check;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Training cells (.h5ad; raw counts or log-normalised).
    pub train: PathBuf,
    /// Generator bundle with encoder (from `scdd train-generator`).
    #[arg(long, short = 'g')]
    pub generator: PathBuf,
    /// Label column (default: the one the generator was trained on).
    #[arg(long)]
    pub label: Option<String>,
    /// Synthetic cells per class.
    #[arg(long, default_value_t = DistillParams::default().spc)]
    pub spc: usize,
    /// dm+dc, dm, dc, none (scDD's initial codes); baselines: random, class-mean, dm-data, dc-data.
    #[arg(long, default_value_t = DistillParams::default().method)]
    pub method: Method,
    /// Optimisation steps.
    #[arg(long, default_value_t = DistillParams::default().steps)]
    pub steps: usize,
    /// Adam step size relative to the RMS of the initial codes (or cells).
    #[arg(long, default_value_t = DistillParams::default().lr)]
    pub lr: f64,
    /// Diffusion timestep t the codes live at.
    #[arg(long, default_value_t = DistillParams::default().timestep)]
    pub timestep: u32,
    /// Real cells per class per step for DC's real gradients.
    #[arg(long, default_value_t = DistillParams::default().real_batch)]
    pub real_batch: usize,
    /// Where codes start: kmeans (centroids of SPC k-means clusters of each class's encoder
    /// features) or random (SPC real cells of each class, encoded: the paper's).
    #[arg(long, default_value_t = DistillParams::default().init.name().to_string())]
    pub init: String,
    /// Weight of gene-space matching next to DM/DC: each decoded cell against the mean cell of
    /// the real cluster it stands for; 0 = off.
    #[arg(long, default_value_t = DistillParams::default().gene_weight)]
    pub gene_weight: f64,
    /// Weight of the KIP term: ridge regression fit on the decoded cells must predict the
    /// labels of real cells (gene space); 0 = off
    #[arg(long, default_value_t = DistillParams::default().kip_weight)]
    pub kip_weight: f64,
    /// The KIP term's ridge, relative to the decoded cells' mean squared norm (centred)
    #[arg(long, default_value_t = DistillParams::default().kip_ridge)]
    pub kip_ridge: f64,
    #[arg(long, default_value_t = DistillParams::default().seed)]
    pub seed: u64,
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    pub device: crate::nn::device::DeviceArg,
    /// Output: .scdd for latent-code methods, .h5ad for cell baselines.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Store the codes as f16 (half the size).
    #[arg(long)]
    pub f16: bool,
    /// Continue from OUT.ckpt, the checkpoint of an identical run on the same inputs.
    #[arg(long)]
    pub resume: bool,
    /// Write a checkpoint (OUT.ckpt) every N steps (0 = never).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: u64,
    /// Scratch space for the real-feature store (default: next to --out).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
    /// Stop after this many steps in total, leaving a checkpoint for --resume (exit status 3).
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    pub fn params(&self) -> anyhow::Result<DistillParams> {
        Ok(DistillParams {
            init: self.init.parse().map_err(|e: String| anyhow::anyhow!("--init: {e}"))?,
            gene_weight: self.gene_weight,
            kip_weight: self.kip_weight,
            kip_ridge: self.kip_ridge,
            method: self.method,
            spc: self.spc,
            steps: self.steps,
            lr: self.lr,
            timestep: self.timestep,
            seed: self.seed,
            real_batch: self.real_batch,
            ..DistillParams::default()
        })
    }

    pub fn io(&self) -> DistillIo {
        DistillIo {
            matrix: self.matrix.spec(),
            label: self.label.clone(),
            f16: self.f16,
            work_dir: self.work_dir.clone(),
            device: self.device,
            checkpoint_every: self.checkpoint_every,
            resume: self.resume,
            stop_after: self.stop_after,
            progress: !self.quiet,
            ..DistillIo::new(self.train.clone(), self.generator.clone(), self.out.clone())
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let cfg = a.params()?.check()?;
    let bundle = load_bundle(&a.generator)?;
    let log = distill_to_file(&cfg, &a.io(), &bundle)?;
    let last = log.history.last();
    println!(
        "{} SPC={} on {} classes → {}{}",
        a.method,
        a.spc,
        log.classes.len(),
        a.out.display(),
        last.map(|l| format!(" (final loss {:.4}, {:.1} steps/s)", l.loss, log.steps_per_s)).unwrap_or_default()
    );
    Ok(())
}
