//! What scdd's neural evaluator plugins (`cnn`, `transformer`) share: the device, a seeded
//! mini-batch training loop (Adam, cross-entropy, class-balanced by nothing but the data), and
//! batched prediction. Everything is deterministic on the CPU for a given seed: weights from
//! `tch::manual_seed`, batch order from a ChaCha RNG.
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

/// `auto` (CUDA when the process has it, else CPU), `cpu`, `cuda` or `cuda:N`.
pub fn device(name: &str) -> Result<Device, String> {
    match name.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => cuda(n),
            None => Err(format!("config device = {other:?}: use auto, cpu, cuda or cuda:N")),
        },
    }
}

fn cuda(n: usize) -> Result<Device, String> {
    let count = if tch::Cuda::is_available() { tch::Cuda::device_count().max(0) as usize } else { 0 };
    if n < count {
        Ok(Device::Cuda(n))
    } else {
        Err(format!("config device = cuda:{n}, but this process sees {count} CUDA device(s)"))
    }
}

/// How long and how fast to train.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSettings {
    /// Passes over the training cells…
    pub epochs: usize,
    /// …but at least this many optimiser steps (a handful of synthetic cells makes one batch).
    pub min_steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
}

impl TrainSettings {
    /// Checks the ranges; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        let bad = |f: &str, v: String| Err(format!("config {f} = {v}: out of range"));
        if !(1..=100_000).contains(&self.epochs) {
            return bad("epochs", self.epochs.to_string());
        }
        if self.min_steps > 10_000_000 {
            return bad("min_steps", self.min_steps.to_string());
        }
        if !(1..=1_000_000).contains(&self.batch_size) {
            return bad("batch_size", self.batch_size.to_string());
        }
        if !(self.lr > 0.0 && self.lr < 10.0) {
            return bad("lr", self.lr.to_string());
        }
        if !(0.0..1.0).contains(&self.weight_decay) {
            return bad("weight_decay", self.weight_decay.to_string());
        }
        Ok(())
    }

    /// Optimiser steps for `n` training cells.
    pub fn steps(&self, n: usize) -> usize {
        (self.epochs * n.div_ceil(self.batch_size)).max(self.min_steps)
    }
}

/// Trains the parameters of `vs` so that `forward(x_batch, train = true)` gives class logits:
/// Adam (decoupled weight decay), mean cross-entropy, shuffled mini-batches drawn in a seeded
/// order. `x` holds one training example per first-axis entry (on the device), `y` the class
/// ids (int64). A non-finite loss stops it with an error.
pub fn train(vs: &nn::VarStore, x: &Tensor, y: &Tensor, settings: &TrainSettings, seed: u64, forward: impl Fn(&Tensor, bool) -> Tensor) -> Result<(), String> {
    let n = x.size()[0] as usize;
    let mut opt = nn::AdamW { wd: settings.weight_decay, ..Default::default() }.build(vs, settings.lr).map_err(|e| e.to_string())?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_ba7c);
    let mut order: Vec<i64> = Vec::new();
    let mut at = 0usize;
    for step in 0..settings.steps(n) {
        if at >= order.len() {
            order = (0..n as i64).collect();
            order.shuffle(&mut rng);
            at = 0;
        }
        let end = (at + settings.batch_size).min(order.len());
        let idx = Tensor::from_slice(&order[at..end]).to_device(x.device());
        at = end;
        let logits = forward(&x.index_select(0, &idx), true);
        let loss = logits.cross_entropy_for_logits(&y.index_select(0, &idx));
        let v = loss.double_value(&[]);
        if !v.is_finite() {
            return Err(format!("training diverged: loss {v} at step {step}"));
        }
        opt.backward_step(&loss);
    }
    Ok(())
}

/// Softmax probabilities of `forward(x, train = false)`, in batches, as a CPU f32 tensor.
pub fn predict(x: &Tensor, batch: usize, forward: impl Fn(&Tensor, bool) -> Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    let n = x.size()[0];
    let parts: Vec<Tensor> = (0..n)
        .step_by(batch.max(1))
        .map(|s| forward(&x.narrow(0, s, (batch as i64).min(n - s)), false).softmax(-1, Kind::Float).to_device(Device::Cpu))
        .collect();
    Tensor::cat(&parts, 0)
}

/// Writes the argmax and the probabilities of `probs` (cells × classes) into the ABI's buffers.
pub fn write_outputs(probs: &Tensor, labels: &mut [u32], out: &mut [f32]) -> Result<(), String> {
    let p: Vec<f32> = Vec::<f32>::try_from(probs.to_kind(Kind::Float).contiguous().view(-1)).map_err(|e| e.to_string())?;
    if p.len() != out.len() {
        return Err(format!("{} probabilities for {} slots", p.len(), out.len()));
    }
    let k = out.len() / labels.len().max(1);
    for (i, row) in p.chunks(k.max(1)).enumerate() {
        if row.iter().any(|v| !v.is_finite()) {
            return Err(format!("non-finite probability for cell {i}"));
        }
        labels[i] = row.iter().enumerate().fold((0, f32::NEG_INFINITY), |a, (j, &v)| if v > a.1 { (j, v) } else { a }).0 as u32;
    }
    out.copy_from_slice(&p);
    Ok(())
}

/// Three classes for the plugins' tests: `n` training and `n` test cells over `g` genes, class
/// `c` marked by 2.5 on genes `j ≡ c (mod 3)` below `marked`, over a small deterministic
/// texture. Returns (train, train labels, test, test labels), cells row-major.
pub fn toy_classes(n: usize, g: usize, marked: usize) -> (Vec<f32>, Vec<u32>, Vec<f32>, Vec<u32>) {
    let k = 3;
    let cell = |c: usize, i: usize| -> Vec<f32> {
        (0..g).map(|j| if j % k == c && j < marked { 2.5 } else { 0.0 } + ((i * 13 + j * 7) % 11) as f32 * 0.05).collect()
    };
    let (mut x, mut y, mut xt, mut yt) = (vec![], vec![], vec![], vec![]);
    for i in 0..n {
        x.extend(cell(i % k, i));
        y.push((i % k) as u32);
        xt.extend(cell((i + 1) % k, i + 500));
        yt.push(((i + 1) % k) as u32);
    }
    (x, y, xt, yt)
}

/// Sets libtorch's CPU threads for this process: `n`, or its default (the cores) when 0.
pub fn set_threads(n: usize) {
    if n > 0 {
        tch::set_num_threads(n as i32);
    }
}

/// Checks a plugin's `device` and `threads` settings; the error names the field.
pub fn check_runtime(device_name: &str, threads: usize) -> Result<(), String> {
    if threads > 1024 {
        return Err(format!("config threads = {threads}: must be at most 1024 (0: libtorch's default)"));
    }
    device(device_name).map(|_| ())
}
