//! `scdd distill` as a library call: checks everything (parameters, output path, bundle,
//! labels, memory) before any work, runs the method, writes the code file (`.scdd`) or the
//! cells (`.h5ad`, through [`crate::synthetic::write`]) and `<out>.log.json`.
use super::real::CellSource;
use super::{distill, optimise, DistillParams, Job, RunLog, Synthetic};
use crate::error::{Context, Result};
use crate::io::fs;
use crate::io::h5ad::MatrixSpec;
use crate::nn::device::DeviceArg;
use crate::nn::TchModel;
use crate::params::Checked;
use crate::synthetic::{self, SyntheticMeta};
use crate::train::checkpoint::{Checkpoint, CheckpointKind};
use crate::train::TrainControl;
use crate::Error;
use ndarray::Array2;
use scdd_core::bundle::GeneratorBundle;
use scdd_core::codes::{LatentCodes, Provenance};
use scdd_core::tensor::Tensor as CoreTensor;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where and how a distillation runs, besides its parameters.
#[derive(Clone, Debug)]
pub struct DistillIo {
    /// Training cells (.h5ad).
    pub train: PathBuf,
    pub matrix: MatrixSpec,
    /// The generator bundle's path (for messages and the input check).
    pub generator: PathBuf,
    /// Label column (default: the generator's).
    pub label: Option<String>,
    /// `.scdd` for code methods, `.h5ad` for cell baselines.
    pub out: PathBuf,
    /// Store the codes as f16.
    pub f16: bool,
    /// Scratch space for the real-feature store (default: next to `out`).
    pub work_dir: Option<PathBuf>,
    pub device: DeviceArg,
    pub checkpoint_every: u64,
    pub resume: bool,
    pub stop_after: Option<u64>,
    pub progress: bool,
    /// Memory a run may use, in bytes (default: what the system has available).
    pub memory_budget: Option<f64>,
}

impl DistillIo {
    pub fn new(train: PathBuf, generator: PathBuf, out: PathBuf) -> Self {
        DistillIo {
            train,
            matrix: MatrixSpec::default(),
            generator,
            label: None,
            out,
            f16: false,
            work_dir: None,
            device: DeviceArg::Auto,
            checkpoint_every: 50,
            resume: false,
            stop_after: None,
            progress: false,
            memory_budget: None,
        }
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

/// A fingerprint of the training file: name, size, shape and a hash of its first and last MiB.
fn file_fingerprint(path: &Path, rows: usize, cols: usize) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let len = f.metadata()?.len();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let n = f.read(&mut buf)?;
    h.update(&buf[..n]);
    if len > (2 << 20) {
        f.seek(SeekFrom::End(-(1 << 20)))?;
        let n = f.read(&mut buf)?;
        h.update(&buf[..n]);
    }
    Ok(format!("{rows} × {cols}, {len} bytes, {}", crate::io::artifacts::hex(&h.finalize()[..8])))
}

/// Runs the distillation and writes `io.out` plus `<out>.log.json`.
pub fn distill_to_file(cfg: &Checked<DistillParams>, io: &DistillIo, bundle: &GeneratorBundle) -> Result<RunLog> {
    // ---- checks before any work
    io.matrix.check()?;
    fs::check_output("--out", &io.out, &[cfg.method.extension()], &[&io.train, &io.generator])?;
    if cfg.method.produces_codes() && bundle.spec.denoiser.is_none() {
        return Err(Error::Incompatible {
            path: io.generator.clone(),
            reason: "a foundation-only bundle; latent-code distillation needs a generator (scdd train-generator)".into(),
        });
    }
    if cfg.method.needs_encoder() && bundle.spec.encoder.is_none() {
        return Err(Error::MissingEncoder { path: io.generator.clone(), needed: format!("distill --method {}", cfg.method) });
    }
    if cfg.method.produces_codes() && cfg.timestep > bundle.spec.schedule.steps {
        return Err(Error::param(
            "--timestep",
            cfg.timestep,
            format!("is beyond the generator's {} diffusion steps", bundle.spec.schedule.steps),
        ));
    }
    let label = io
        .label
        .clone()
        .or_else(|| (!bundle.label_column.is_empty()).then(|| bundle.label_column.clone()))
        .context("--label is needed: the bundle names no label column")?;
    let source = CellSource::open(&io.train, &io.matrix.read_options(), &bundle.genes, &bundle.spec.space)?;
    let obs = source.reader.read_obs()?;
    let labels = obs.labels(&label).with_context(|| io.train.display().to_string())?;
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
    let plan = super::Plan::new(&class_of, classes.len(), cfg.spc, cfg.seed)?;
    let small = plan.small_classes(&classes, cfg.spc);
    if !small.is_empty() {
        let list: Vec<String> = small.iter().map(|(c, n)| format!("{c} ({n})")).collect();
        eprintln!("warning: --spc {} exceeds the cells of {}: their synthetic cells start from repeated cells", cfg.spc, list.join(", "));
    }
    let hidden_sum = bundle.spec.decoder.params().iter().map(|(_, s)| s[0]).sum::<usize>()
        + bundle.spec.denoiser.as_ref().map_or(0, |d| d.hidden.iter().sum::<usize>() * 3);
    let need = optimise::estimate_bytes(cfg, plan.present.len(), bundle.genes.len(), bundle.spec.latent_dim, hidden_sum);
    let budget = io.memory_budget.or_else(crate::train::memory_budget_bytes);
    if let Some(budget) = budget {
        if need > budget {
            return Err(Error::TooLarge {
                what: format!("--spc {} × {} classes ({} synthetic cells)", cfg.spc, plan.present.len(), cfg.spc * plan.present.len()),
                need_mb: need / 1e6,
                budget_mb: budget / 1e6,
                hint: "lower --spc".into(),
            });
        }
    }
    let model = if cfg.method.needs_encoder() {
        let mut m = TchModel::from_bundle(bundle, io.device.resolve()?)?;
        m.freeze();
        Some(m)
    } else {
        None
    };
    let ctl = TrainControl::for_output(&io.out, io.device, io.checkpoint_every, io.resume, io.stop_after, io.progress, None)?;
    let generator_id = bundle.generator_id();
    let mut fingerprint = BTreeMap::new();
    fingerprint.insert("training data".to_string(), file_fingerprint(&io.train, source.reader.n_rows(), source.reader.n_cols())?);
    fingerprint.insert("generator".to_string(), generator_id.clone());
    fingerprint.insert("label".to_string(), label.clone());
    let work_dir = io.work_dir.clone().unwrap_or_else(|| default_work_dir(&io.out));
    let job = Job {
        source: &source,
        class_of: &class_of,
        classes: &classes,
        latent_dim: bundle.spec.latent_dim,
        model: model.as_ref(),
        generator_id,
        alpha_bar: bundle.spec.schedule.alpha_bar(cfg.timestep),
        work_dir,
        ctl,
        fingerprint,
    };

    // A resume must fit before the feature pass starts.
    if let (true, Some(path)) = (job.ctl.resume, job.ctl.checkpoint.as_ref()) {
        let ck = Checkpoint::load(CheckpointKind::Distill, path)?;
        ck.check(path, &serde_json::to_string(&cfg.relevant())?, &job.fingerprint)?;
    }

    // ---- the work
    let (syn, log) = distill(cfg, &job)?;
    let source_name = io.train.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
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
                provenance: provenance(cfg, &source_name, &source, &log),
            };
            let codes = if io.f16 { codes.to_f16()? } else { codes };
            fs::write_atomic(&io.out, &codes.to_bytes())?;
        }
        Synthetic::Cells { x, genes, labels } => {
            let x = Array2::from_shape_vec((labels.len(), genes), x)?;
            let ds = synthetic::dataset(&x, &labels, &classes, &label, &bundle.genes, &source_name)?;
            let meta = SyntheticMeta { method: cfg.method.name().into(), spc: Some(cfg.spc as u32), source: source_name.clone(), generator_id: None };
            synthetic::write(&io.out, &ds, bundle, &meta)?;
        }
    }
    fs::write_json(&log_path(&io.out), &log)?;
    Ok(log)
}

fn provenance(cfg: &DistillParams, name: &str, source: &CellSource, log: &RunLog) -> Provenance {
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
        created: fs::now_rfc3339(),
        params,
    }
}
