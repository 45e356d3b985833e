//! SCDG, the single-step conditional diffusion generator (paper §III-B), in the foundation's
//! latent space: training the x0-predicting denoiser `U(z_t, t, τ(c))` (eq. 3) with an EMA of
//! its weights, sampling new cells by iterating the reverse process (DDPM posterior with the
//! predicted `z_0`, DDIM, or one step from noise), and the quality report.
pub mod data;
pub mod output;

use crate::foundation::dense_batch;
use crate::nn::optim::{AdamW, Ema};
use crate::nn::{init_denoiser, Mode, TchModel};
use crate::params::{self, Check, Checked};
use crate::train::checkpoint::{Checkpoint, CheckpointKind};
use crate::train::{holdout_split, Batcher, Progress, TrainControl};
use crate::error::{bail, Context, Result};
use scdd_core::bundle::GeneratorBundle;
use scdd_core::graph::{DenoiserSpec, NoiseSchedule};
use scdd_core::matrix::CsrMatrix;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// How SCDG is trained. Serialised with the CLI flags' names (`timesteps`, `latent_scale =
/// "auto"`, `report_sampler = "ddpm"`): the pipeline's `[generator]` table deserialises into it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorConfig {
    /// Denoiser hidden sizes (down path; the up path mirrors all but the last).
    pub hidden: Vec<usize>,
    /// Width of the time and class embeddings.
    pub emb_dim: usize,
    /// Diffusion steps T.
    pub timesteps: u32,
    pub beta_min: f64,
    pub beta_max: f64,
    pub lr: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    pub steps: u64,
    pub ema_decay: f64,
    /// Fraction of each class held out for the quality report (0 = no report).
    pub holdout: f64,
    pub seed: u64,
    /// How the report samples cells.
    #[serde(with = "as_text")]
    pub report_sampler: Sampler,
    /// Radius of the latent sphere the diffusion runs on (see [`scale_latents`]); auto:
    /// `√latent_dim` when the foundation's latents are L2-normalised (unit norm), else 1.
    #[serde(with = "as_text")]
    pub latent_scale: LatentScale,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        let s = NoiseSchedule::default();
        GeneratorConfig {
            hidden: vec![512, 512, 256, 128],
            emb_dim: 128,
            timesteps: s.steps,
            beta_min: s.beta_min,
            beta_max: s.beta_max,
            lr: 1e-3,
            weight_decay: 0.0,
            batch_size: 256,
            steps: 2000,
            ema_decay: 0.999,
            holdout: 0.1,
            seed: 0,
            report_sampler: Sampler::Ddpm,
            latent_scale: LatentScale(None),
        }
    }
}

impl GeneratorConfig {
    /// The noise schedule these settings describe.
    pub fn schedule(&self) -> NoiseSchedule {
        NoiseSchedule { beta_min: self.beta_min, beta_max: self.beta_max, steps: self.timesteps }
    }
}

impl Check for GeneratorConfig {
    fn validate(&self) -> Result<()> {
        if self.hidden.is_empty() || self.hidden.iter().any(|&h| h == 0 || h > 65_536) {
            return Err(crate::Error::param("--hidden", format!("{:?}", self.hidden), "need at least one layer, sizes between 1 and 65536"));
        }
        if self.emb_dim < 2 || !self.emb_dim.is_multiple_of(2) || self.emb_dim > 65_536 {
            return Err(crate::Error::param("--emb-dim", self.emb_dim, "must be even, between 2 and 65536"));
        }
        params::count("--timesteps", self.timesteps as u64, 1, 100_000)?;
        for (name, b) in [("--beta-min", self.beta_min), ("--beta-max", self.beta_max)] {
            if !(b.is_finite() && b > 0.0 && b < 1.0) {
                return Err(crate::Error::param(name, b, "must be in (0, 1)"));
            }
        }
        if self.beta_min > self.beta_max {
            return Err(crate::Error::param("--beta-min", self.beta_min, format!("must not exceed --beta-max {}", self.beta_max)));
        }
        self.schedule().validate().context("noise schedule")?;
        params::positive("--lr", self.lr)?;
        params::non_negative("--weight-decay", self.weight_decay)?;
        params::count("--batch-size", self.batch_size as u64, 2, 1 << 20)?;
        params::count("--steps", self.steps, 1, 100_000_000)?;
        params::in_unit("--ema-decay", self.ema_decay, 0.0, 1.0)?;
        params::in_unit("--holdout", self.holdout, 0.0, 1.0)?;
        match self.report_sampler {
            Sampler::SingleStep { t } if t < 1 || t > self.timesteps => {
                return Err(crate::Error::param("--report-sampler", format!("single:{t}"), format!("t must be in 1..={}", self.timesteps)))
            }
            Sampler::Ddim { steps: 0 } => return Err(crate::Error::param("--report-sampler", "ddim:0", "needs at least 1 step")),
            _ => {}
        }
        Ok(())
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
            _ => Err(format!("latent scale {s:?}: use auto or a number > 0")),
        }
    }
}

impl as_text::Flag for LatentScale {
    fn flag(&self) -> String {
        match self.0 {
            None => "auto".into(),
            Some(v) => v.to_string(),
        }
    }
}

/// Serde as the flag's text (`FromStr` / [`as_text::Flag`]); numbers are accepted too.
mod as_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::str::FromStr;

    /// The value as its flag's text.
    pub trait Flag {
        fn flag(&self) -> String;
    }

    pub fn serialize<T: Flag, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.flag())
    }
    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr<Err = String>,
        D: Deserializer<'de>,
    {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            F(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::F(f) => f.to_string(),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Labelled, log-normalised cells aligned to the foundation's genes.
pub struct GenData {
    pub name: String,
    pub x: CsrMatrix,
    pub label_column: String,
    /// Class per cell (cells without a label are not used).
    pub labels: Vec<Option<u32>>,
    pub classes: Vec<String>,
}

/// `√ᾱ_t` and `√(1 − ᾱ_t)` for `t = 0..=T`, f32, on `device`.
pub struct ScheduleTables {
    pub alpha_bar: Vec<f64>,
    pub sqrt_ab: Tensor,
    pub sqrt_1m_ab: Tensor,
}

impl ScheduleTables {
    pub fn new(s: &NoiseSchedule, device: Device) -> Self {
        let ab = s.alpha_bars();
        let a: Vec<f32> = ab.iter().map(|v| v.sqrt() as f32).collect();
        let b: Vec<f32> = ab.iter().map(|v| (1.0 - v).sqrt() as f32).collect();
        ScheduleTables { alpha_bar: ab, sqrt_ab: Tensor::from_slice(&a).to_device(device), sqrt_1m_ab: Tensor::from_slice(&b).to_device(device) }
    }
}

/// Whether the encoder's output is L2-normalised (its last layer is `L2Normalize`).
pub fn unit_norm_latents(spec: &scdd_core::graph::GraphSpec) -> bool {
    matches!(spec.encoder.as_ref().and_then(|e| e.layers.last()), Some(scdd_core::graph::Layer::L2Normalize { .. }))
}

/// Moves a foundation's latents from the unit sphere to the sphere of radius `s`: appends a
/// fixed linear layer `s·I` (no bias) to the encoder and divides the weight of the decoder's
/// first linear layer by `s`, so `D(E(x))` is unchanged.
///
/// Why: the diffusion noise is N(0, I) per coordinate. Unit-norm latents in L dimensions have
/// per-coordinate spread ~1/√L, so with the paper's β schedule the signal would drown in the
/// noise after a few dozen of the T steps and the denoiser would learn little beyond class
/// means. With `s = √L` each coordinate has unit scale, as diffusion schedules assume.
pub fn scale_latents(b: &GeneratorBundle, s: f32) -> Result<GeneratorBundle> {
    use scdd_core::graph::{layer_param, Layer};
    let mut out = b.clone();
    let l = b.spec.latent_dim;
    let enc = out.spec.encoder.as_mut().context("scaling latents needs the encoder")?;
    let k = enc.layers.len();
    enc.layers.push(Layer::Linear { in_dim: l, out_dim: l, bias: false });
    let mut eye = vec![0f32; l * l];
    for i in 0..l {
        eye[i * l + i] = s;
    }
    out.tensors.insert(layer_param(&enc.prefix, k, "weight"), scdd_core::tensor::Tensor::from_f32(vec![l, l], &eye)?);
    let dec = &out.spec.decoder;
    let first = dec
        .layers
        .iter()
        .position(|x| !matches!(x, Layer::Dropout { .. }))
        .filter(|&i| matches!(dec.layers[i], Layer::Linear { .. }))
        .context("the decoder does not start with a linear layer; cannot rescale its input")?;
    let name = layer_param(&dec.prefix, first, "weight");
    let w = out.tensors.get(&name).with_context(|| format!("tensor {name}: missing"))?;
    let v: Vec<f32> = w.to_f32()?.iter().map(|x| x / s).collect();
    let shape = w.shape.clone();
    out.tensors.insert(name, scdd_core::tensor::Tensor::from_f32(shape, &v)?);
    out.validate()?;
    Ok(out)
}

/// Encodes `rows` of `x` (eval mode) into latents `[rows, L]` on the model's device.
pub fn encode_rows(model: &TchModel, x: &CsrMatrix, rows: &[usize]) -> Result<Tensor> {
    let mut parts = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for chunk in rows.chunks(512) {
            let xb = dense_batch(x, chunk, model.device);
            parts.push(model.encode_mode(&xb, &mut Mode::Eval)?);
        }
        Ok(())
    })?;
    if parts.is_empty() {
        return Ok(Tensor::zeros([0, model.spec.latent_dim as i64], (Kind::Float, model.device)));
    }
    Ok(Tensor::cat(&parts, 0))
}

/// A finished generator run.
pub struct GeneratorRun {
    pub bundle: GeneratorBundle,
    /// None when nothing was held out.
    pub quality: Option<QualityReport>,
    /// Wall time of encoding the training cells plus the optimisation loop.
    pub train_seconds: f64,
    /// Wall time of the optimisation loop alone (this invocation's steps).
    pub loop_seconds: f64,
    pub denoiser_params: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    loss_sum: f64,
    loss_n: u64,
    history: Vec<(u64, f64)>,
}

/// Trains the denoiser on the foundation's latents of `data`. The foundation bundle must have
/// an encoder. Returns the generator bundle (EMA weights; encoder kept unless `keep_encoder`
/// is false) and the quality report (None when nothing was held out).
pub fn train_generator(
    foundation: &GeneratorBundle,
    data: &GenData,
    cfg: &Checked<GeneratorConfig>,
    ctl: &TrainControl,
    keep_encoder: bool,
) -> Result<GeneratorRun> {
    if foundation.spec.encoder.is_none() {
        bail!("the foundation bundle has no encoder; train-generator needs one to embed the training cells");
    }
    if data.x.n_cols() != foundation.genes.len() {
        bail!("{}: {} genes, the foundation has {}; align the data first", data.name, data.x.n_cols(), foundation.genes.len());
    }
    if data.classes.len() < 2 {
        bail!(
            "{}: obs/{} has {} class(es) ({}); a conditional generator needs at least two",
            data.name,
            data.label_column,
            data.classes.len(),
            data.classes.join(", ")
        );
    }
    let labelled: Vec<usize> = (0..data.labels.len()).filter(|&i| data.labels[i].is_some()).collect();
    if labelled.is_empty() {
        bail!("{}: no cell has a label in obs/{}; the training set is empty", data.name, data.label_column);
    }
    let sub_labels: Vec<Option<u32>> = labelled.iter().map(|&i| data.labels[i]).collect();
    let (fit_l, held_l) = holdout_split(labelled.len(), Some(&sub_labels), cfg.holdout, cfg.seed);
    let fit: Vec<usize> = fit_l.iter().map(|&i| labelled[i]).collect();
    let held: Vec<usize> = held_l.iter().map(|&i| labelled[i]).collect();
    let device = ctl.device;
    let scale = cfg.latent_scale.0.unwrap_or(if unit_norm_latents(&foundation.spec) { (foundation.spec.latent_dim as f32).sqrt() } else { 1.0 });
    let scaled;
    let foundation = if scale != 1.0 {
        scaled = scale_latents(foundation, scale)?;
        &scaled
    } else {
        foundation
    };

    let mut spec = foundation.spec.clone();
    let dspec = DenoiserSpec {
        latent_dim: spec.latent_dim,
        hidden: cfg.hidden.clone(),
        emb_dim: cfg.emb_dim,
        n_classes: data.classes.len(),
        norm_eps: 1e-5,
    };
    spec.denoiser = Some(dspec.clone());
    spec.schedule = cfg.schedule();
    let mut tensors = foundation.tensors.clone();
    tensors.extend(init_denoiser(&dspec, cfg.seed));
    let mut model = TchModel::new(spec, &tensors, device)?;
    model.freeze();
    model.set_trainable("denoiser.", true);

    let started = Instant::now();
    let z_all = encode_rows(&model, &data.x, &fit)?;
    let cls_all = Tensor::from_slice(&fit.iter().map(|&i| data.labels[i].unwrap() as i64).collect::<Vec<_>>()).to_device(device);
    let tables = ScheduleTables::new(&cfg.schedule(), device);
    let mut batcher = Batcher::new(fit.len(), cfg.batch_size, cfg.seed).with_context(|| data.name.clone())?;
    let params = model.trainable("denoiser.");
    let mut opt = AdamW::new(params.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect(), cfg.lr, cfg.weight_decay);
    let mut ema = Ema::new(&params, cfg.ema_decay);
    let config_json = serde_json::to_string(&**cfg)?;
    // Hashing the data costs a pass over it: only when a checkpoint is written or read.
    let inputs = std::cell::OnceCell::new();
    let fingerprint = || {
        inputs.get_or_init(|| {
            BTreeMap::from([
                ("training cells".to_string(), format!("{} × {} genes", data.x.n_rows(), data.x.n_cols())),
                ("training data".to_string(), crate::train::fingerprint_csr(&data.x)),
                ("foundation".to_string(), foundation.generator_id()),
                ("classes".to_string(), data.classes.join(",")),
            ])
        })
    };
    let mut st = State::default();
    let mut step = 0u64;
    if ctl.resume {
        let path = ctl.checkpoint.as_ref().context("--resume needs a checkpoint path")?;
        let ck = Checkpoint::load(CheckpointKind::Generator, path)?;
        ck.check(path, &config_json, fingerprint())?;
        model.load_values(ck.group("model/", device)?.iter())?;
        let all = ck.all(device)?;
        opt.load_state(&all, ck.step)?;
        ema.load(&all, ck.step)?;
        st = serde_json::from_str(&ck.state).context("checkpoint state")?;
        step = ck.step;
    }
    let save = |step: u64, st: &State, opt: &AdamW, ema: &Ema| -> Result<()> {
        let Some(path) = &ctl.checkpoint else { return Ok(()) };
        let mut ck = Checkpoint::new(config_json.clone(), fingerprint().clone(), step, serde_json::to_string(st)?);
        for (name, t) in model.state("denoiser.") {
            ck.put(format!("model/{name}"), &t)?;
        }
        for (name, t) in opt.state() {
            ck.put(name, t)?;
        }
        for (name, t) in ema.shadow() {
            ck.put(format!("ema/{name}"), t)?;
        }
        ck.save(CheckpointKind::Generator, path)
    };
    let progress = Progress::new("generator", cfg.steps, step, ctl.progress, "cells");
    progress.log(&format!(
        "generator: {} cells ({} held out) of {} classes, latents scaled to radius {scale:.3}, denoiser {:?} emb {}, {} parameters, T = {}, {} steps on {}",
        fit.len(),
        held.len(),
        data.classes.len(),
        cfg.hidden,
        cfg.emb_dim,
        model.n_params("denoiser."),
        cfg.timesteps,
        cfg.steps,
        crate::nn::device::describe(device)
    ));
    let big_t = cfg.timesteps;
    let latent = model.spec.latent_dim;
    let mut done = 0u64;
    let log_every = (cfg.steps / 10).max(1);
    let loop_started = Instant::now();
    while step < cfg.steps {
        let rows = batcher.rows(step);
        let b = rows.len();
        let idx = Tensor::from_slice(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>()).to_device(device);
        let z0 = z_all.index_select(0, &idx);
        let c = cls_all.index_select(0, &idx);
        let mut rng = crate::nn::rng::stream(cfg.seed, "diffusion", step);
        let ts: Vec<i64> = (0..b).map(|_| 1 + (rand::Rng::gen_range(&mut rng, 0..big_t)) as i64).collect();
        let eps = crate::nn::rng::normals(&mut rng, b * latent);
        let t = Tensor::from_slice(&ts).to_device(device);
        let eps = Tensor::from_slice(&eps).reshape([b as i64, latent as i64]).to_device(device);
        let a = tables.sqrt_ab.index_select(0, &t).unsqueeze(1);
        let s = tables.sqrt_1m_ab.index_select(0, &t).unsqueeze(1);
        let zt = &z0 * a + eps * s;
        let pred = model.denoise(&zt, &t, &c)?;
        let loss = (pred - &z0).square().mean(Kind::Float);
        opt.zero_grad();
        loss.backward();
        opt.step();
        ema.update(opt.params());
        step += 1;
        done += b as u64;
        let lv = loss.double_value(&[]);
        if !lv.is_finite() {
            return Err(crate::Error::NonFinite { what: "train-generator".into(), step, value: lv, flag: "--lr".into() });
        }
        st.loss_sum += lv;
        st.loss_n += 1;
        progress.tick(step, done, lv);
        if step.is_multiple_of(log_every) || step == cfg.steps {
            let mean = st.loss_sum / st.loss_n.max(1) as f64;
            st.history.push((step, mean));
            st.loss_sum = 0.0;
            st.loss_n = 0;
            progress.log(&format!("step {step:>6}: denoising loss {mean:.6}"));
        }
        if ctl.checkpoint_every > 0 && step.is_multiple_of(ctl.checkpoint_every) {
            save(step, &st, &opt, &ema)?;
        }
        if ctl.stops_at(step, cfg.steps) {
            save(step, &st, &opt, &ema)?;
            progress.finish();
            return Err(ctl.interrupted(step));
        }
    }
    progress.finish();
    // The bundle carries the EMA weights.
    model.load_values(ema.shadow().iter().map(|(n, t)| (n, t)))?;
    let loop_seconds = loop_started.elapsed().as_secs_f64();
    let train_secs = started.elapsed().as_secs_f64();
    let report = if held.is_empty() {
        None
    } else {
        Some(quality_report(&model, data, &fit, &held, &cfg.report_sampler, cfg.seed)?)
    };
    let mut meta = foundation.metadata.clone();
    meta.insert("generator.config".into(), config_json);
    meta.insert("generator.latent_scale".into(), scale.to_string());
    meta.insert("generator.train_data".into(), data.name.clone());
    meta.insert("generator.loss_history".into(), serde_json::to_string(&st.history)?);
    meta.insert("generator.seconds".into(), format!("{train_secs:.1}"));
    meta.insert("generator.device".into(), crate::nn::device::describe(device));
    if let Some(r) = &report {
        meta.insert("generator.report".into(), serde_json::to_string(r)?);
    }
    meta.insert("created".into(), crate::io::fs::now_rfc3339());
    meta.insert("scdd_version".into(), scdd_core::SCDD_VERSION.to_string());
    let bundle = model.to_bundle(foundation.genes.clone(), data.label_column.clone(), data.classes.clone(), meta)?;
    let bundle = if keep_encoder { bundle } else { bundle.without_encoder() };
    let denoiser_params = model.n_params("denoiser.");
    Ok(GeneratorRun { bundle, quality: report, train_seconds: train_secs, loop_seconds, denoiser_params })
}

// ------------------------------------------------------------------------------------------
// Sampling
// ------------------------------------------------------------------------------------------

/// How latents are drawn from the generator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Sampler {
    /// The full ancestral chain `t = T..1`: `z_{t−1} ~ q(z_{t−1} | z_t, ẑ_0)` with the
    /// denoiser's `ẑ_0` (DDPM posterior), output `ẑ_0` at `t = 1`.
    Ddpm,
    /// Deterministic DDIM (η = 0) over `steps` timesteps from T to 1, spaced quadratically
    /// (denser at small t, where the signal of unit-norm latents survives the noise).
    Ddim { steps: u32 },
    /// One denoising step from pure noise at timestep `t`: `ẑ_0 = U(ε, t, τ(c))`.
    SingleStep { t: u32 },
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::Ddim { steps: 50 }
    }
}

/// DDIM's timesteps: `t_i = 1 + round((T − 1)·(i/(K − 1))²)`, descending, duplicates removed.
pub fn ddim_timesteps(big_t: u32, steps: u32) -> Vec<u32> {
    let k = steps.clamp(1, big_t);
    let mut ts: Vec<u32> = (0..k)
        .rev()
        .map(|i| {
            let f = if k == 1 { 1.0 } else { i as f64 / (k - 1) as f64 };
            1 + ((big_t - 1) as f64 * f * f).round() as u32
        })
        .collect();
    ts.dedup();
    ts
}

impl as_text::Flag for Sampler {
    fn flag(&self) -> String {
        match self {
            Sampler::Ddpm => "ddpm".into(),
            Sampler::Ddim { steps } => format!("ddim:{steps}"),
            Sampler::SingleStep { t } => format!("single:{t}"),
        }
    }
}

impl std::str::FromStr for Sampler {
    type Err = String;
    /// `ddpm`, `ddim` (50 steps), `ddim:K`, `single:T`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("unknown sampler {s:?}; use ddpm, ddim, ddim:K or single:T");
        match s.split_once(':') {
            None if s == "ddpm" => Ok(Sampler::Ddpm),
            None if s == "ddim" => Ok(Sampler::default()),
            Some(("ddim", k)) => k.parse().map(|steps| Sampler::Ddim { steps }).map_err(|_| bad()),
            Some(("single", t)) => t.parse().map(|t| Sampler::SingleStep { t }).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sampler::Ddpm => write!(f, "DDPM ancestral sampling (all T steps, x0-parameterised posterior)"),
            Sampler::Ddim { steps } => write!(f, "DDIM (eta = 0), {steps} quadratically spaced steps"),
            Sampler::SingleStep { t } => write!(f, "single denoising step from noise at t = {t}"),
        }
    }
}

/// Draws latents `ẑ_0` for the given class ids with `sampler`; all noise from the seeded
/// stream `(seed, "sample", chunk)`, so the result does not depend on the device.
pub fn sample_latents(model: &TchModel, classes: &[u32], sampler: &Sampler, seed: u64) -> Result<Tensor> {
    let d = model.denoiser_spec()?;
    let s = &model.spec.schedule;
    let big_t = s.steps;
    if let Some(&c) = classes.iter().find(|&&c| c as usize >= d.n_classes) {
        bail!("class id {c} but the generator has {} classes", d.n_classes);
    }
    match sampler {
        Sampler::SingleStep { t } if *t < 1 || *t > big_t => bail!("--single-step {t}: must be in 1..={big_t}"),
        Sampler::Ddim { steps } if *steps == 0 => bail!("--steps must be at least 1"),
        _ => {}
    }
    let dev = model.device;
    let l = d.latent_dim;
    let ab = s.alpha_bars();
    let mut out = Vec::new();
    for (ci, chunk) in classes.chunks(4096).enumerate() {
        let n = chunk.len() as i64;
        let mut rng = crate::nn::rng::stream(seed, "sample", ci as u64);
        let noise = |rng: &mut rand_chacha::ChaCha8Rng| {
            Tensor::from_slice(&crate::nn::rng::normals(rng, chunk.len() * l)).reshape([n, l as i64]).to_device(dev)
        };
        let cls = Tensor::from_slice(&chunk.iter().map(|&c| c as i64).collect::<Vec<_>>()).to_device(dev);
        let tvec = |t: u32| Tensor::full([n], t as i64, (Kind::Int64, dev));
        let z0 = tch::no_grad(|| -> Result<Tensor> {
            let mut z = noise(&mut rng);
            match sampler {
                Sampler::SingleStep { t } => model.denoise(&z, &tvec(*t), &cls),
                Sampler::Ddpm => {
                    let mut x0 = z.shallow_clone();
                    for t in (1..=big_t).rev() {
                        x0 = model.denoise(&z, &tvec(t), &cls)?;
                        if t == 1 {
                            break;
                        }
                        let beta = s.beta(t);
                        let (ab_t, ab_prev) = (ab[t as usize], ab[t as usize - 1]);
                        let c0 = ab_prev.sqrt() * beta / (1.0 - ab_t);
                        let ct = (1.0 - beta).sqrt() * (1.0 - ab_prev) / (1.0 - ab_t);
                        let var = beta * (1.0 - ab_prev) / (1.0 - ab_t);
                        z = &x0 * c0 + &z * ct + noise(&mut rng) * var.sqrt();
                    }
                    Ok(x0)
                }
                Sampler::Ddim { steps } => {
                    let ts = ddim_timesteps(big_t, *steps);
                    let mut x0 = z.shallow_clone();
                    for (i, &t) in ts.iter().enumerate() {
                        x0 = model.denoise(&z, &tvec(t), &cls)?;
                        let Some(&next) = ts.get(i + 1) else { break };
                        let (ab_t, ab_n) = (ab[t as usize], ab[next as usize]);
                        let eps = (&z - &x0 * ab_t.sqrt()) / (1.0 - ab_t).sqrt();
                        z = &x0 * ab_n.sqrt() + eps * (1.0 - ab_n).sqrt();
                    }
                    Ok(x0)
                }
            }
        })?;
        out.push(z0);
    }
    if out.is_empty() {
        return Ok(Tensor::zeros([0, l as i64], (Kind::Float, dev)));
    }
    Ok(Tensor::cat(&out, 0))
}

/// Samples cells: latents by `sampler`, decoded to log-normalised expression `[n, genes]`.
pub fn sample_cells(model: &TchModel, classes: &[u32], sampler: &Sampler, seed: u64) -> Result<Tensor> {
    let z = sample_latents(model, classes, sampler, seed)?;
    Ok(tch::no_grad(|| model.decode(&z)))
}

// ------------------------------------------------------------------------------------------
// Quality report
// ------------------------------------------------------------------------------------------

/// Per-class agreement between sets of cells and real held-out cells of that class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassQuality {
    pub class: String,
    /// Held-out real cells (each compared set has this many cells).
    pub n: usize,
    /// RBF bandwidth: the median distance between training cells of the class in the MMD
    /// space (the global one for classes with fewer than 3 training cells).
    pub sigma: f64,
    /// MMD² (unbiased estimate) between generated cells and the held-out cells.
    pub mmd_generated: f64,
    /// MMD² between decoded latents of the held-out cells, D(E(x)), and the held-out cells:
    /// the autoencoder's own ceiling.
    pub mmd_decoded: f64,
    /// MMD² between real training cells of the class and the held-out cells: the sampling
    /// noise floor.
    pub mmd_real: f64,
    /// Pearson correlation of gene means with the held-out cells (log-normalised space).
    pub pearson_generated: f64,
    pub pearson_decoded: f64,
    pub pearson_real: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// How MMD is computed.
    pub mmd_space: String,
    /// Median distance between held-out cells: the bandwidth of classes too small for their own.
    pub sigma: f64,
    pub sampler: String,
    pub classes: Vec<ClassQuality>,
    /// Unweighted means over classes.
    pub mean: ClassQuality,
}

impl QualityReport {
    pub fn table(&self) -> String {
        let w = self.classes.iter().map(|c| c.class.len()).max().unwrap_or(5).clamp(5, 28);
        let mut s = format!(
            "{:<w$} {:>5} {:>7}  {:>9} {:>9} {:>9}  {:>8} {:>8} {:>8}\n",
            "class", "n", "σ", "MMD² gen", "MMD² dec", "MMD² real", "r gen", "r dec", "r real"
        );
        for c in self.classes.iter().chain(std::iter::once(&self.mean)) {
            let name: String = c.class.chars().take(w).collect();
            s += &format!(
                "{:<w$} {:>5} {:>7.2}  {:>9.5} {:>9.5} {:>9.5}  {:>8.4} {:>8.4} {:>8.4}\n",
                name, c.n, c.sigma, c.mmd_generated, c.mmd_decoded, c.mmd_real, c.pearson_generated, c.pearson_decoded, c.pearson_real
            );
        }
        s += &format!(
            "MMD²: unbiased estimate, RBF kernel in {} (σ = median distance between training cells of the class; {:.3} for tiny classes); r: Pearson of per-gene means vs held-out cells (log-normalised).\n\
             gen = {}; dec = decoded real latents D(E(x)) (the autoencoder's ceiling); real = real training cells (sampling noise floor).",
            self.mmd_space, self.sigma, self.sampler
        );
        s
    }
}

/// PCA of `x` (rows = cells): (mean `[G]`, components `[k, G]`), fitted with an SVD on at most
/// 2000 rows.
fn pca(x: &Tensor, k: usize) -> (Tensor, Tensor) {
    let mean = x.mean_dim(Some([0i64].as_slice()), true, Kind::Float);
    let xc = x - &mean;
    // torch.svd(some=True): V is [G, min(n, G)], columns = right singular vectors.
    let (_, _, v) = xc.svd(true, true);
    let k = (k as i64).min(v.size()[1]);
    (mean, v.narrow(1, 0, k).tr().contiguous())
}

fn project(x: &Tensor, pca: &(Tensor, Tensor)) -> ndarray::Array2<f32> {
    crate::nn::to_array(&(x - &pca.0).matmul(&pca.1.tr()))
}

/// Compares, per class, generated cells, decoded real latents and real training cells against
/// the held-out cells: MMD² in a 50-d PCA space fitted on training cells, Pearson of gene means.
pub fn quality_report(model: &TchModel, data: &GenData, fit: &[usize], held: &[usize], sampler: &Sampler, seed: u64) -> Result<QualityReport> {
    let dev = model.device;
    let n_classes = data.classes.len();
    let mut by_class_held: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    let mut by_class_fit: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for &r in held {
        by_class_held[data.labels[r].unwrap() as usize].push(r);
    }
    for &r in fit {
        by_class_fit[data.labels[r].unwrap() as usize].push(r);
    }
    // PCA on up to 2000 training cells (seeded subsample).
    let mut pool = fit.to_vec();
    if pool.len() > 2000 {
        let perm = crate::nn::rng::permutation(&mut crate::nn::rng::stream(seed, "pca", 0), pool.len());
        pool = perm[..2000].iter().map(|&i| fit[i]).collect();
    }
    let pca_fit = tch::no_grad(|| pca(&dense_batch(&data.x, &pool, dev), 50));
    let held_all = tch::no_grad(|| project(&dense_batch(&data.x, held, dev), &pca_fit));
    let sigma_all = scdd_core::metrics::median_distance(held_all.view());
    // Generated cells of every class in one sampling run (one reverse chain for all).
    let gen_classes: Vec<u32> = (0..n_classes).flat_map(|c| std::iter::repeat_n(c as u32, by_class_held[c].len())).collect();
    let gen_all = sample_cells(model, &gen_classes, sampler, crate::nn::rng::derive(seed, "report", 0))?;
    let mut offsets = vec![0i64; n_classes];
    for c in 1..n_classes {
        offsets[c] = offsets[c - 1] + by_class_held[c - 1].len() as i64;
    }
    let mut rows = Vec::new();
    for c in 0..n_classes {
        let h = &by_class_held[c];
        if h.is_empty() {
            continue;
        }
        let n = h.len();
        let real_x = dense_batch(&data.x, h, dev);
        let gen_x = gen_all.narrow(0, offsets[c], n as i64);
        let dec_x = tch::no_grad(|| -> Result<Tensor> {
            let z = model.encode_mode(&real_x, &mut Mode::Eval)?;
            Ok(model.decode(&z))
        })?;
        // real training cells of the class, n of them (with repetition if the class is small)
        let f = &by_class_fit[c];
        let mut rng = crate::nn::rng::stream(seed, "report-real", c as u64);
        let pick: Vec<usize> = if f.is_empty() {
            Vec::new()
        } else {
            let perm = crate::nn::rng::permutation(&mut rng, f.len());
            (0..n).map(|i| f[perm[i % f.len()]]).collect()
        };
        let tr_x = dense_batch(&data.x, &pick, dev);
        let arr = |t: &Tensor| crate::nn::to_array(t);
        let (real_a, gen_a, dec_a, tr_a) = (arr(&real_x), arr(&gen_x), arr(&dec_x), arr(&tr_x));
        let p = |t: &Tensor| tch::no_grad(|| project(t, &pca_fit));
        let (real_p, gen_p, dec_p, tr_p) = (p(&real_x), p(&gen_x), p(&dec_x), p(&tr_x));
        let sigma = if f.len() >= 3 {
            let fit_p = p(&dense_batch(&data.x, &f[..f.len().min(500)], dev));
            scdd_core::metrics::median_distance(fit_p.view())
        } else {
            sigma_all
        };
        use scdd_core::metrics::{mean_pearson, mmd_rbf_unbiased as mmd_rbf};
        let nan_if_empty = |a: &ndarray::Array2<f32>, v: f64| if a.nrows() == 0 { f64::NAN } else { v };
        rows.push(ClassQuality {
            class: data.classes[c].clone(),
            n,
            sigma,
            mmd_generated: mmd_rbf(gen_p.view(), real_p.view(), sigma),
            mmd_decoded: mmd_rbf(dec_p.view(), real_p.view(), sigma),
            mmd_real: nan_if_empty(&tr_a, mmd_rbf(tr_p.view(), real_p.view(), sigma)),
            pearson_generated: mean_pearson(gen_a.view(), real_a.view()),
            pearson_decoded: mean_pearson(dec_a.view(), real_a.view()),
            pearson_real: nan_if_empty(&tr_a, mean_pearson(tr_a.view(), real_a.view())),
        });
    }
    let avg = |f: &dyn Fn(&ClassQuality) -> f64| {
        let v: Vec<f64> = rows.iter().map(f).filter(|v| v.is_finite()).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let mean = ClassQuality {
        class: "mean".into(),
        n: rows.iter().map(|r| r.n).sum(),
        sigma: avg(&|r| r.sigma),
        mmd_generated: avg(&|r| r.mmd_generated),
        mmd_decoded: avg(&|r| r.mmd_decoded),
        mmd_real: avg(&|r| r.mmd_real),
        pearson_generated: avg(&|r| r.pearson_generated),
        pearson_decoded: avg(&|r| r.pearson_decoded),
        pearson_real: avg(&|r| r.pearson_real),
    };
    Ok(QualityReport {
        mmd_space: "the first 50 principal components of log-normalised expression (PCA fitted on training cells)".into(),
        sigma: sigma_all,
        sampler: sampler.to_string(),
        classes: rows,
        mean,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddim_timesteps_are_quadratic_and_descending() {
        let ts = ddim_timesteps(1000, 50);
        assert_eq!((ts[0], *ts.last().unwrap()), (1000, 1));
        assert!(ts.windows(2).all(|w| w[0] > w[1]));
        assert!(ts.iter().filter(|&&t| t <= 30).count() >= 5, "{ts:?}");
        assert_eq!(ddim_timesteps(10, 1), vec![10]);
        let short = ddim_timesteps(5, 100);
        assert_eq!((short[0], *short.last().unwrap()), (5, 1));
        assert_eq!("ddim:7".parse::<Sampler>().unwrap(), Sampler::Ddim { steps: 7 });
        assert_eq!("single:20".parse::<Sampler>().unwrap(), Sampler::SingleStep { t: 20 });
        assert_eq!("ddpm".parse::<Sampler>().unwrap(), Sampler::Ddpm);
        assert!("nope".parse::<Sampler>().is_err());
    }
}
