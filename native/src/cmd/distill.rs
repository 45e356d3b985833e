//! `scdd distill`: latent-code distillation (DM / DC / DM+DC) and its baselines.
use crate::cmd::decode::{load_bundle, synthetic_dataset};
use crate::device::DeviceArg;
use crate::distill::real::CellSource;
use crate::distill::{self, check_output_kind, DistillConfig, Job, Method, RunLog, Synthetic};
use crate::h5ad;
use crate::{fsutil, nn::TchModel};
use anyhow::{Context, Result};
use ndarray::Array2;
use scdd_core::bundle::GeneratorBundle;
use scdd_core::codes::{LatentCodes, Provenance};
use scdd_core::tensor::Tensor as CoreTensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    #[arg(long, default_value_t = DistillConfig::default().spc)]
    pub spc: usize,
    #[arg(long, value_enum, default_value_t = DistillConfig::default().method)]
    pub method: Method,
    /// Optimisation steps.
    #[arg(long, default_value_t = DistillConfig::default().steps)]
    pub steps: usize,
    /// Adam step size relative to the RMS of the initial codes (or cells).
    #[arg(long, default_value_t = DistillConfig::default().lr)]
    pub lr: f64,
    /// Diffusion timestep t the codes live at.
    #[arg(long, default_value_t = DistillConfig::default().timestep)]
    pub timestep: u32,
    /// Real cells per class per step for DC's real gradients.
    #[arg(long, default_value_t = DistillConfig::default().real_batch)]
    pub real_batch: usize,
    #[arg(long, default_value_t = DistillConfig::default().seed)]
    pub seed: u64,
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
    /// Output: .scdd for latent-code methods, .h5ad for cell baselines.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Store the codes as f16 (half the size).
    #[arg(long)]
    pub f16: bool,
    /// Continue from the last checkpoint of an identical run.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value_t = DistillConfig::default().checkpoint_every)]
    pub checkpoint_every: usize,
    /// Scratch space for the real-feature store and checkpoints (default: next to --out).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
    /// Stop after this many steps in total, leaving a checkpoint for --resume.
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    pub fn config(&self) -> DistillConfig {
        DistillConfig {
            method: self.method,
            spc: self.spc,
            steps: self.steps,
            lr: self.lr,
            timestep: self.timestep,
            seed: self.seed,
            real_batch: self.real_batch,
            checkpoint_every: self.checkpoint_every,
            ..DistillConfig::default()
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let bundle = load_bundle(&a.generator)?;
    let log = distill_to_file(&a, &bundle)?;
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

/// Runs the distillation described by `a` and writes `a.out` plus `<out>.log.json`.
pub fn distill_to_file(a: &Args, bundle: &GeneratorBundle) -> Result<RunLog> {
    let cfg = a.config();
    check_output_kind(cfg.method, &a.out)?;
    if bundle.spec.denoiser.is_none() && cfg.method.produces_codes() {
        anyhow::bail!("{}: a foundation-only bundle; latent-code distillation needs a generator (scdd train-generator)", a.generator.display());
    }
    cfg.validate(bundle.spec.schedule.steps)?;
    let label = a
        .label
        .clone()
        .or_else(|| (!bundle.label_column.is_empty()).then(|| bundle.label_column.clone()))
        .context("--label is needed: the bundle names no label column")?;
    let opts = a.matrix.read_options();
    let source = CellSource::open(&a.train, &opts, &bundle.genes, &bundle.spec.space)?;
    let obs = source.reader.read_obs()?;
    let labels = obs.labels(&label).with_context(|| a.train.display().to_string())?;
    // A foundation-only bundle has no classes: cell-level methods then use the data's.
    let classes = if bundle.classes.is_empty() { labels.classes.clone() } else { bundle.classes.clone() };
    let map: Vec<Option<u32>> =
        labels.classes.iter().map(|c| classes.iter().position(|k| k == c).map(|p| p as u32)).collect();
    let unknown: Vec<&str> =
        labels.classes.iter().zip(&map).filter(|(_, m)| m.is_none()).map(|(c, _)| c.as_str()).collect();
    if !unknown.is_empty() {
        eprintln!("note: classes not in the generator are left out: {}", unknown.join(", "));
    }
    let class_of: Vec<Option<u32>> = labels.ids.iter().map(|id| id.and_then(|i| map[i as usize])).collect();

    let model = if cfg.method != Method::Random && cfg.method != Method::ClassMean {
        let device = a.device.resolve()?;
        let mut m = TchModel::from_bundle(bundle, device)?;
        m.freeze();
        Some(m)
    } else {
        None
    };
    let work_dir = a.work_dir.clone().unwrap_or_else(|| default_work_dir(&a.out));
    let job = Job {
        source: &source,
        class_of: &class_of,
        classes: &classes,
        latent_dim: bundle.spec.latent_dim,
        model: model.as_ref(),
        generator_id: bundle.generator_id(),
        alpha_bar: bundle.spec.schedule.alpha_bar(cfg.timestep),
        work_dir: work_dir.clone(),
        resume: a.resume,
        stop_after: a.stop_after,
        quiet: a.quiet,
    };
    let (syn, log) = distill::distill(&cfg, &job)?;
    let source_name = a.train.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    match syn {
        Synthetic::Codes { z, dim, labels } => {
            let codes = LatentCodes {
                codes: CoreTensor::from_f32(vec![labels.len(), dim], &z)?,
                labels,
                classes: bundle.classes.clone(),
                label_column: label.clone(),
                spc: cfg.spc as u32,
                timestep: cfg.timestep,
                generator_id: job.generator_id.clone(),
                provenance: provenance(&cfg, &source_name, &source, &log),
            };
            let codes = if a.f16 { codes.to_f16()? } else { codes };
            fsutil::write_atomic(&a.out, &codes.to_bytes())?;
        }
        Synthetic::Cells { x, genes, labels } => {
            let x = Array2::from_shape_vec((labels.len(), genes), x)?;
            let ds = synthetic_dataset(&x, &labels, &classes, &label, &bundle.genes, &source_name)?;
            let mut uns = BTreeMap::new();
            uns.insert("scdd_method".into(), cfg.method.name().into());
            uns.insert("scdd_spc".into(), cfg.spc.to_string());
            uns.insert("scdd_values".into(), format!("log1p of counts normalised to {} per cell", bundle.spec.space.target_sum));
            uns.insert(crate::prep::SPACE_KEY.into(), crate::prep::space_tag(&bundle.spec.space));
            uns.insert("scdd_source".into(), source_name.clone());
            h5ad::write_h5ad(&a.out, &ds, &uns)?;
        }
    }
    fsutil::write_json(&log_path(&a.out), &log)?;
    let _ = std::fs::remove_dir(&work_dir); // only if empty
    Ok(log)
}

fn provenance(cfg: &DistillConfig, name: &str, source: &CellSource, log: &RunLog) -> Provenance {
    let mut params = BTreeMap::new();
    params.insert("steps".into(), cfg.steps.to_string());
    params.insert("lr".into(), cfg.lr.to_string());
    params.insert("real_batch".into(), cfg.real_batch.to_string());
    params.insert("device".into(), log.device.clone());
    Provenance {
        source_name: name.to_string(),
        source_shape: (source.reader.n_rows() as u64, source.reader.n_cols() as u64),
        method: cfg.method.name().into(),
        seed: cfg.seed,
        scdd_version: scdd_core::SCDD_VERSION.into(),
        created: fsutil::now_rfc3339(),
        params,
    }
}

/// `<out>.log.json`.
pub fn log_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".log.json");
    PathBuf::from(s)
}

fn default_work_dir(out: &Path) -> PathBuf {
    let name = out.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    out.with_file_name(format!(".{name}.work"))
}
