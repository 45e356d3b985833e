//! Latent-code distillation (paper Algorithm 1) and the baselines that share its command.
//!
//! * `dm`, `dc`, `dm+dc` — scDD: latent codes Z, cells `S = G(Z) = D(U(Z, t, τ(c)))`, matching
//!   on the frozen encoder's features, only Z updated. Gradients use the paper's memory trick:
//!   `∂L/∂S` is computed on a detached copy of S, then one backward through G gives `∂L/∂Z`.
//! * `none` — scDD's initial codes (SPC real cells per class, encoded and noised to t).
//! * `random` — SPC real cells per class; `class-mean` — means of SPC random parts of each class.
//! * `dm-data`, `dc-data` — the same losses on gene values directly (kept non-negative).
//!
//! Z is optimised with Adam whose step size is `lr × RMS(initial values)`, so the same relative
//! default works for latent codes and for gene values. DM and DC are each divided by their value
//! at step 0, so `dm+dc` weighs them equally on any dataset. Every random draw of step k is
//! seeded by (seed, k): a resumed run repeats an uninterrupted one exactly.
pub mod matching;
pub mod real;

use crate::fsutil;
use crate::nn::TchModel;
use anyhow::{bail, Context, Result};
use matching::ClassSlice;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use real::{CellSource, FeatureStore};
use scdd_core::format::{self, FileKind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Method {
    #[value(name = "dm")]
    Dm,
    #[value(name = "dc")]
    Dc,
    #[value(name = "dm+dc")]
    DmDc,
    #[value(name = "none")]
    None,
    #[value(name = "random")]
    Random,
    #[value(name = "class-mean")]
    ClassMean,
    #[value(name = "dm-data")]
    DmData,
    #[value(name = "dc-data")]
    DcData,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Dm => "dm",
            Method::Dc => "dc",
            Method::DmDc => "dm+dc",
            Method::None => "none",
            Method::Random => "random",
            Method::ClassMean => "class-mean",
            Method::DmData => "dm-data",
            Method::DcData => "dc-data",
        }
    }
    /// Writes latent codes (`.scdd`) rather than cells (`.h5ad`).
    pub fn produces_codes(self) -> bool {
        matches!(self, Method::Dm | Method::Dc | Method::DmDc | Method::None)
    }
    fn uses_dm(self) -> bool {
        matches!(self, Method::Dm | Method::DmDc | Method::DmData)
    }
    fn uses_dc(self) -> bool {
        matches!(self, Method::Dc | Method::DmDc | Method::DcData)
    }
    fn optimises(self) -> bool {
        self.uses_dm() || self.uses_dc()
    }
    fn needs_encoder(self) -> bool {
        !matches!(self, Method::Random | Method::ClassMean)
    }
    pub fn all() -> [Method; 8] {
        [Method::Dm, Method::Dc, Method::DmDc, Method::None, Method::Random, Method::ClassMean, Method::DmData, Method::DcData]
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Distillation settings. Defaults are the ones `scdd distill` uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistillConfig {
    pub method: Method,
    /// Synthetic cells per class.
    pub spc: usize,
    /// Optimisation steps K.
    pub steps: usize,
    /// Adam step size relative to the RMS of the initial values.
    pub lr: f64,
    /// Diffusion timestep t of the codes.
    pub timestep: u32,
    pub seed: u64,
    /// Real cells per class whose features give DC's real gradient each step.
    pub real_batch: usize,
    /// A fresh task head every this many steps (DC).
    pub head_reset: usize,
    /// SGD steps of the task head on the synthetic set after each step (DC).
    pub head_steps: usize,
    pub head_lr: f64,
    pub checkpoint_every: usize,
}

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig {
            method: Method::DmDc,
            spc: 1,
            steps: 200,
            lr: 0.1,
            timestep: 50,
            seed: 0,
            real_batch: 256,
            head_reset: 10,
            head_steps: 5,
            head_lr: 0.1,
            checkpoint_every: 50,
        }
    }
}

impl DistillConfig {
    pub fn validate(&self, schedule_steps: u32) -> Result<()> {
        if self.spc == 0 {
            bail!("--spc must be at least 1");
        }
        if self.timestep > schedule_steps {
            bail!("--timestep {} is beyond the generator's {} diffusion steps", self.timestep, schedule_steps);
        }
        if self.lr.is_nan() || self.lr <= 0.0 {
            bail!("--lr must be positive, got {}", self.lr);
        }
        Ok(())
    }
}

/// One logged optimisation step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepLog {
    pub step: usize,
    pub loss: f64,
    pub dm: f64,
    pub dc: f64,
}

/// What a run did: configuration, loss curve, timings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunLog {
    pub config: DistillConfig,
    pub device: String,
    pub classes: Vec<String>,
    pub n_real_cells: usize,
    pub history: Vec<StepLog>,
    pub feature_pass_s: f64,
    pub optimise_s: f64,
    pub steps_per_s: f64,
    pub peak_rss_mb: f64,
    pub resumed_from: Option<usize>,
}

/// The synthetic set: latent codes (to be decoded by the generator) or cells.
pub enum Synthetic {
    /// `[n, latent]` codes at `timestep`, with class ids.
    Codes { z: Vec<f32>, dim: usize, labels: Vec<u32> },
    /// `[n, genes]` log-normalised cells with class ids.
    Cells { x: Vec<f32>, genes: usize, labels: Vec<u32> },
}

/// A run stopped by `stop_after`; its checkpoint lets `--resume` continue.
#[derive(Debug, thiserror::Error)]
#[error("stopped after step {step}; resume with --resume (checkpoint {})", checkpoint.display())]
pub struct Interrupted {
    pub step: usize,
    pub checkpoint: PathBuf,
}

const CKPT: FileKind = FileKind { name: "scdd distillation checkpoint", magic: *b"SCDDCKPT", version: 1 };

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    config: DistillConfig,
    generator_id: String,
    step: usize,
    var: Vec<f32>,
    shape: Vec<i64>,
    adam_m: Vec<f32>,
    adam_v: Vec<f32>,
    norm: (f64, f64),
    /// DC's task head (weight, bias) as it stood after the step.
    head: (Vec<f32>, Vec<f32>),
    history: Vec<StepLog>,
}

/// Inputs of a run besides the configuration.
pub struct Job<'a> {
    pub source: &'a CellSource,
    /// Class id (into `classes`) of every row of the training file.
    pub class_of: &'a [Option<u32>],
    pub classes: &'a [String],
    pub latent_dim: usize,
    pub model: Option<&'a TchModel>,
    pub generator_id: String,
    /// ᾱ_t of the generator's noise schedule at `cfg.timestep`.
    pub alpha_bar: f64,
    /// Where the feature store and checkpoints live.
    pub work_dir: PathBuf,
    pub resume: bool,
    /// Stop (leaving a checkpoint) once this many steps are done in total: time-boxed runs.
    pub stop_after: Option<usize>,
    pub quiet: bool,
}

fn bar(len: u64, msg: &str, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {prefix}")
            .unwrap()
            .progress_chars("=> "),
    );
    b.set_message(msg.to_string());
    b
}

fn dense_tensor(m: &scdd_core::matrix::CsrMatrix, device: Device) -> Tensor {
    let d = m.to_dense();
    let (r, c) = d.dim();
    Tensor::from_slice(d.as_slice().expect("standard layout")).reshape([r as i64, c as i64]).to_device(device)
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))?)
}

fn step_rng(seed: u64, step: usize, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream.wrapping_mul(1_000_003).wrapping_add(step as u64));
    r
}

/// Runs one distillation or baseline.
pub fn distill(cfg: &DistillConfig, job: &Job) -> Result<(Synthetic, RunLog)> {
    let n_classes = job.classes.len();
    let present: Vec<u32> = {
        let mut seen = vec![false; n_classes];
        for c in job.class_of.iter().flatten() {
            seen[*c as usize] = true;
        }
        (0..n_classes as u32).filter(|&c| seen[c as usize]).collect()
    };
    if present.is_empty() {
        bail!("no training cell belongs to any of the generator's classes");
    }
    let mut class_rows = vec![Vec::new(); n_classes];
    for (r, c) in job.class_of.iter().enumerate() {
        if let Some(c) = c {
            class_rows[*c as usize].push(r);
        }
    }
    let mut log = RunLog {
        config: cfg.clone(),
        device: job.model.map(|m| crate::device::describe(m.device)).unwrap_or_else(|| "cpu".into()),
        classes: job.classes.to_vec(),
        n_real_cells: job.class_of.iter().flatten().count(),
        history: vec![],
        feature_pass_s: 0.0,
        optimise_s: 0.0,
        steps_per_s: 0.0,
        peak_rss_mb: 0.0,
        resumed_from: None,
    };
    // Initial rows: SPC per class (without replacement where the class is large enough).
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut init_rows = Vec::new();
    let mut labels = Vec::new();
    let mut slices = Vec::new();
    for &c in &present {
        let rows = &class_rows[c as usize];
        let pick: Vec<usize> = if rows.len() >= cfg.spc {
            rows.choose_multiple(&mut rng, cfg.spc).copied().collect()
        } else {
            (0..cfg.spc).map(|_| rows[rng.gen_range(0..rows.len())]).collect()
        };
        slices.push(ClassSlice { class: c as i64, start: init_rows.len() as i64, len: cfg.spc as i64 });
        init_rows.extend(pick);
        labels.extend(std::iter::repeat_n(c, cfg.spc));
    }
    match cfg.method {
        Method::Random => {
            let x = job.source.rows(&init_rows)?;
            let genes = x.n_cols();
            return Ok((Synthetic::Cells { x: x.to_dense().into_raw_vec_and_offset().0, genes, labels }, finish(log)));
        }
        Method::ClassMean => {
            let (x, genes) = class_means(job.source, &class_rows, &present, cfg.spc, &mut rng)?;
            return Ok((Synthetic::Cells { x, genes, labels }, finish(log)));
        }
        _ => {}
    }
    let model = job.model.context("this method needs the generator bundle's encoder")?;
    debug_assert!(cfg.method.needs_encoder());
    let device = model.device;
    std::fs::create_dir_all(&job.work_dir)?;

    // Real side: features of every training cell (only for optimising methods).
    let t0 = Instant::now();
    let store = if cfg.method.optimises() {
        let path = job.work_dir.join(format!("features-{}.f32", &job.generator_id[..16.min(job.generator_id.len())]));
        let pb = bar(job.source.reader.n_rows() as u64, "features", job.quiet);
        let s = FeatureStore::build(job.source, job.class_of, n_classes, job.latent_dim, &path, |x| {
            tch::no_grad(|| to_vec(&model.encode(&dense_tensor(x, device), false)?))
        }, &pb)?;
        pb.finish_and_clear();
        Some(s)
    } else {
        None
    };
    log.feature_pass_s = t0.elapsed().as_secs_f64();

    // Initial variable.
    let x0 = dense_tensor(&job.source.rows(&init_rows)?, device);
    let classes_t = Tensor::from_slice(&labels.iter().map(|&l| l as i64).collect::<Vec<_>>()).to_device(device);
    let t = Tensor::full([labels.len() as i64], cfg.timestep as i64, (Kind::Int64, device));
    let codes = cfg.method.produces_codes();
    let init = if codes {
        let z0 = tch::no_grad(|| model.encode(&x0, false))?;
        let ab = job.alpha_bar;
        tch::manual_seed(cfg.seed as i64);
        let eps = Tensor::randn(z0.size(), (Kind::Float, device));
        z0 * ab.sqrt() + eps * (1.0 - ab).sqrt()
    } else {
        x0
    };

    let ckpt_path = job.work_dir.join(format!("{}-spc{}-seed{}.ckpt", cfg.method.name().replace('+', "_"), cfg.spc, cfg.seed));
    let mut var = init.detach();
    let mut m = var.zeros_like();
    let mut v = var.zeros_like();
    let mut norm = (f64::NAN, f64::NAN);
    let mut start = 0;
    let mut head = (Tensor::zeros([0], (Kind::Float, device)), Tensor::zeros([0], (Kind::Float, device)));
    if job.resume && ckpt_path.exists() {
        let ck: Checkpoint = format::decode(&CKPT, &fsutil::read(&ckpt_path)?)
            .with_context(|| format!("{}: unreadable checkpoint", ckpt_path.display()))?;
        if ck.config != *cfg || ck.generator_id != job.generator_id {
            bail!("{}: checkpoint was written by a run with other settings; remove it or drop --resume", ckpt_path.display());
        }
        let back = |v: &[f32]| Tensor::from_slice(v).reshape(ck.shape.as_slice()).to_device(device);
        var = back(&ck.var);
        m = back(&ck.adam_m);
        v = back(&ck.adam_v);
        norm = ck.norm;
        if !ck.head.0.is_empty() {
            let w = Tensor::from_slice(&ck.head.0).reshape([n_classes as i64, job.latent_dim as i64]).to_device(device);
            head = (w, Tensor::from_slice(&ck.head.1).to_device(device));
        }
        start = ck.step;
        log.history = ck.history;
        log.resumed_from = Some(start);
    }

    if cfg.method.optimises() {
        let store = store.as_ref().expect("built above");
        // Features are divided by their mean norm over the real cells (see FeatureStore).
        let fscale = store.mean_norm;
        let real_means = Tensor::from_slice(&store.class_means.concat())
            .reshape([n_classes as i64, job.latent_dim as i64])
            .to_device(device)
            / fscale;
        let rms = f64::try_from(init.square().mean(Kind::Float).sqrt())?;
        let lr = cfg.lr * rms.max(1e-8);
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let pb = bar(cfg.steps as u64, cfg.method.name(), job.quiet);
        pb.set_position(start as u64);
        let t_opt = Instant::now();
        for step in start..cfg.steps {
            if cfg.method.uses_dc() && (step % cfg.head_reset.max(1) == 0 || head.0.numel() == 0) {
                head = fresh_head(n_classes, job.latent_dim, cfg.seed, step, device);
            }
            // ∂L/∂S on a detached S (memory trick, §III-C-4).
            let s = if codes { tch::no_grad(|| model.generate(&var, &t, &classes_t))? } else { var.shallow_clone() };
            let s_leaf = s.detach().set_requires_grad(true);
            let feats = model.encode(&s_leaf, false)? / fscale;
            let mut loss = Tensor::zeros([], (Kind::Float, device));
            let (mut dm_v, mut dc_v) = (0.0, 0.0);
            if cfg.method.uses_dm() {
                let dm = matching::dm_loss(&feats, &slices, &real_means);
                dm_v = f64::try_from(&dm)?;
                if norm.0.is_nan() {
                    norm.0 = dm_v.max(1e-12);
                }
                loss += dm / norm.0;
            }
            if cfg.method.uses_dc() {
                let mut srng = step_rng(cfg.seed, step, 1);
                let mut real = Vec::with_capacity(slices.len());
                for sl in &slices {
                    let rows = &store.class_rows[sl.class as usize];
                    let k = cfg.real_batch.min(rows.len());
                    let pick: Vec<usize> = rows.choose_multiple(&mut srng, k).copied().collect();
                    let f = store.read(&pick)?;
                    real.push(Tensor::from_slice(&f).reshape([k as i64, job.latent_dim as i64]).to_device(device) / fscale);
                }
                let dc = matching::dc_loss(&head.0, &head.1, &feats, &slices, &real);
                dc_v = f64::try_from(&dc)?;
                if norm.1.is_nan() {
                    norm.1 = dc_v.max(1e-12);
                }
                loss += dc / norm.1;
            }
            let total = f64::try_from(&loss)?;
            let g_s = Tensor::run_backward(&[&loss], &[&s_leaf], false, false).pop().expect("one input");
            let g = if codes {
                let z = var.detach().set_requires_grad(true);
                let s2 = model.generate(&z, &t, &classes_t)?;
                Tensor::run_backward(&[&(s2 * &g_s).sum(Kind::Float)], &[&z], false, false).pop().expect("one input")
            } else {
                g_s
            };
            // Adam on the variable.
            tch::no_grad(|| {
                let k = (step + 1) as f64;
                m = &m * b1 + &g * (1.0 - b1);
                v = &v * b2 + g.square() * (1.0 - b2);
                let mh = &m / (1.0 - b1.powf(k));
                let vh = &v / (1.0 - b2.powf(k));
                var = &var - mh / (vh.sqrt() + eps) * lr;
                if !codes {
                    var = var.clamp_min(0.0);
                }
            });
            if cfg.method.uses_dc() && cfg.head_steps > 0 {
                let f = tch::no_grad(|| -> Result<Tensor> {
                    let s = if codes { model.generate(&var, &t, &classes_t)? } else { var.shallow_clone() };
                    Ok(model.encode(&s, false)? / fscale)
                })?;
                for _ in 0..cfg.head_steps {
                    matching::train_head_step(&mut head.0, &mut head.1, &f, &classes_t, cfg.head_lr);
                }
            }
            log.history.push(StepLog { step, loss: total, dm: dm_v, dc: dc_v });
            pb.set_prefix(format!("loss {total:.4}"));
            pb.inc(1);
            let done = step + 1;
            let stop = job.stop_after.is_some_and(|s| done >= s) && done < cfg.steps;
            if stop || (cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0 && done < cfg.steps) {
                let ck = Checkpoint {
                    config: cfg.clone(),
                    generator_id: job.generator_id.clone(),
                    step: done,
                    var: to_vec(&var)?,
                    shape: var.size(),
                    adam_m: to_vec(&m)?,
                    adam_v: to_vec(&v)?,
                    norm,
                    head: (to_vec(&head.0)?, to_vec(&head.1)?),
                    history: log.history.clone(),
                };
                fsutil::write_atomic(&ckpt_path, &format::encode(&CKPT, &ck))?;
            }
            if stop {
                pb.finish_and_clear();
                bail!(Interrupted { step: done, checkpoint: ckpt_path });
            }
        }
        pb.finish_and_clear();
        let done = cfg.steps.saturating_sub(start);
        log.optimise_s = t_opt.elapsed().as_secs_f64();
        log.steps_per_s = if log.optimise_s > 0.0 { done as f64 / log.optimise_s } else { 0.0 };
    }
    if let Some(s) = store {
        s.remove();
    }
    let _ = std::fs::remove_file(&ckpt_path);
    let dim = var.size()[1] as usize;
    let data = to_vec(&var)?;
    let out = if codes {
        Synthetic::Codes { z: data, dim, labels }
    } else {
        Synthetic::Cells { x: data, genes: dim, labels }
    };
    Ok((out, finish(log)))
}

fn finish(mut log: RunLog) -> RunLog {
    log.peak_rss_mb = crate::train::peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / (1024.0 * 1024.0));
    log
}

/// A fresh linear task head, PyTorch's default init `U(−1/√d, 1/√d)`, seeded by (seed, step).
fn fresh_head(n_classes: usize, dim: usize, seed: u64, step: usize, device: Device) -> (Tensor, Tensor) {
    let mut rng = step_rng(seed, step, 2);
    let bound = 1.0 / (dim as f32).sqrt();
    let w: Vec<f32> = (0..n_classes * dim).map(|_| rng.gen_range(-bound..bound)).collect();
    let b: Vec<f32> = (0..n_classes).map(|_| rng.gen_range(-bound..bound)).collect();
    (
        Tensor::from_slice(&w).reshape([n_classes as i64, dim as i64]).to_device(device),
        Tensor::from_slice(&b).to_device(device),
    )
}

/// Per class, the means of `spc` random, disjoint, near-equal parts of its cells (streamed in
/// chunks, so a class never has to fit in memory).
fn class_means(
    source: &CellSource,
    class_rows: &[Vec<usize>],
    present: &[u32],
    spc: usize,
    rng: &mut ChaCha8Rng,
) -> Result<(Vec<f32>, usize)> {
    let mut out = Vec::new();
    let mut genes = 0;
    for &c in present {
        let mut rows = class_rows[c as usize].clone();
        rows.shuffle(rng);
        for part in 0..spc {
            // part k takes rows k, k+spc, ... (all rows when the class is smaller than spc)
            let mine: Vec<usize> = if rows.len() >= spc {
                rows.iter().skip(part).step_by(spc).copied().collect()
            } else {
                rows.clone()
            };
            let mut sum: Vec<f64> = Vec::new();
            for chunk in mine.chunks(real::CHUNK_ROWS) {
                let x = source.rows(chunk)?;
                genes = x.n_cols();
                if sum.is_empty() {
                    sum = vec![0.0; genes];
                }
                for r in 0..x.n_rows() {
                    let (idx, val) = x.row(r);
                    for (&j, &v) in idx.iter().zip(val) {
                        sum[j as usize] += v as f64;
                    }
                }
            }
            out.extend(sum.iter().map(|s| (s / mine.len() as f64) as f32));
        }
    }
    Ok((out, genes))
}

/// Where a method's output goes by default: `.scdd` for codes, `.h5ad` for cells.
pub fn check_output_kind(method: Method, out: &Path) -> Result<()> {
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    match (method.produces_codes(), ext) {
        (true, "scdd") | (false, "h5ad") => Ok(()),
        (true, _) => bail!("--method {method} writes latent codes: give --out a .scdd path (got {})", out.display()),
        (false, _) => bail!("--method {method} writes cells: give --out a .h5ad path (got {})", out.display()),
    }
}
