//! Lightweight classifiers trained on the device (`kernels/train.wgsl`): CellTypist-style
//! logistic regression — per-gene z-scaling fit on the training cells, values clipped to ±10,
//! softmax regression with the L2 penalty of `C = 1` — and a one-hidden-layer ReLU perceptron.
//! Full-batch Adam: a recipient trains on distilled sets of tens to thousands of cells, which fit
//! on the device whole.
use crate::gpu::{DeviceArray, Gpu, Program};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Steps submitted to the device at a time (bounds the recorded work, lets progress show).
const STEPS_PER_SUBMIT: usize = 25;

/// Per-gene z-scaling fit on the training cells (population standard deviation; a constant
/// gene keeps scale 1), then clipping to ±10 — CellTypist's preparation.
#[derive(Clone, Debug, PartialEq)]
pub struct Scaler {
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
}

impl Scaler {
    /// Fits on `x` (`n` cells × `d` genes, row-major); f64 sums.
    pub fn fit(x: &[f32], n: usize, d: usize) -> Scaler {
        let mut sum = vec![0f64; d];
        for row in x.chunks_exact(d) {
            sum.iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64);
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n.max(1) as f64).collect();
        let mut sq = vec![0f64; d];
        for row in x.chunks_exact(d) {
            sq.iter_mut().zip(row).zip(&mean).for_each(|((s, &v), m)| *s += (v as f64 - m).powi(2));
        }
        let scale = sq.iter().map(|s| (s / n.max(1) as f64).sqrt()).map(|s| if s > 0.0 { s as f32 } else { 1.0 }).collect();
        Scaler { mean: mean.iter().map(|&m| m as f32).collect(), scale }
    }

    /// Scaled and clipped copy of `x` (rows of the fitted width).
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let d = self.mean.len();
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks_exact(d) {
            out.extend(row.iter().zip(&self.mean).zip(&self.scale).map(|((v, m), s)| ((v - m) / s).clamp(-10.0, 10.0)));
        }
        out
    }
}

/// How to train.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainSettings {
    /// Hidden units; 0 for logistic regression.
    pub hidden: usize,
    pub steps: usize,
    pub lr: f32,
    /// L2 penalty `λ/2‖W‖²` added to the mean cross-entropy (weights only, not biases).
    pub l2: f32,
    /// Initial weights of the perceptron (logistic regression starts from zero).
    pub seed: u64,
}

impl TrainSettings {
    /// CellTypist's `C = 1` on `n` cells: `λ = 1/(C·n)` on the mean loss.
    pub fn logistic(n: usize) -> Self {
        TrainSettings { hidden: 0, steps: 500, lr: 0.02, l2: 1.0 / n.max(1) as f32, seed: 0 }
    }

    /// The core's MLP evaluator's width and penalty (scikit-learn's `MLPClassifier` defaults).
    pub fn mlp(seed: u64) -> Self {
        TrainSettings { hidden: 128, steps: 600, lr: 3e-3, l2: 1e-4, seed }
    }

    pub fn check(&self) -> Result<(), String> {
        if !(1..=100_000).contains(&self.steps) {
            return Err(format!("steps = {}: must be between 1 and 100000", self.steps));
        }
        if self.hidden > 65_536 {
            return Err(format!("hidden = {}: at most 65536", self.hidden));
        }
        if !(self.lr > 0.0 && self.lr <= 10.0) {
            return Err(format!("learning rate {}: must be in (0, 10]", self.lr));
        }
        if !(self.l2 >= 0.0 && self.l2.is_finite()) {
            return Err(format!("L2 penalty {}: must be non-negative", self.l2));
        }
        Ok(())
    }
}

/// One trainable tensor on the device with its Adam moments.
struct Param {
    value: DeviceArray,
    grad: DeviceArray,
    /// Adam's first then second moments (2 × the values).
    moments: DeviceArray,
    l2: f32,
}

impl Param {
    fn new(gpu: &Gpu, name: &str, init: &[f32], l2: f32) -> Result<Param, String> {
        Ok(Param { value: gpu.upload(name, init)?, grad: gpu.zeros(name, init.len())?, moments: gpu.zeros(name, 2 * init.len())?, l2 })
    }

    /// Records an Adam step; its number is `step[0]` (advanced by the `tick` kernel).
    fn adam(&self, gpu: &Gpu, prog: &mut Program, step: &DeviceArray, lr: f32) {
        let n = self.value.len();
        gpu.dispatch(prog, &gpu.train.adam, [n as u32, 0, lr.to_bits(), self.l2.to_bits()], &[(1, &self.grad), (4, &self.value), (6, &self.moments), (8, step)], Gpu::grid(n.div_ceil(256)));
    }
}

/// A classifier trained on the device; the weights stay there for prediction.
pub struct GpuClassifier {
    pub scaler: Scaler,
    pub n_classes: usize,
    pub hidden: usize,
    /// First layer (classes × genes for logistic regression, hidden × genes otherwise) and the
    /// output layer (classes × hidden) of the perceptron.
    layers: Vec<(Param, Param)>,
}

impl GpuClassifier {
    /// Trains on `x` (`n` cells × `d` genes, log-normalised) with class ids `labels` (< `k`).
    pub async fn fit(gpu: &Gpu, x: &[f32], shape: (usize, usize), labels: &[u32], k: usize, s: &TrainSettings) -> Result<GpuClassifier, String> {
        Self::fit_reporting(gpu, x, shape, labels, k, s, &mut |_| {}).await
    }

    /// [`GpuClassifier::fit`], calling `progress` with the fraction of steps done about every
    /// twentieth (waiting for the device there, so the figure is what has run).
    pub async fn fit_reporting(gpu: &Gpu, x: &[f32], (n, d): (usize, usize), labels: &[u32], k: usize, s: &TrainSettings, progress: &mut dyn FnMut(f64)) -> Result<GpuClassifier, String> {
        s.check()?;
        if n == 0 || d == 0 || x.len() != n * d || labels.len() != n {
            return Err(format!("{} values and {} labels for {n} cells × {d} genes", x.len(), labels.len()));
        }
        if k < 2 {
            return Err(format!("{k} class: need two or more to train a classifier"));
        }
        if let Some(&c) = labels.iter().find(|&&c| c as usize >= k) {
            return Err(format!("class id {c} with {k} classes"));
        }
        if let Some(v) = x.iter().find(|v| !v.is_finite()) {
            return Err(format!("the training cells hold a non-finite value ({v})"));
        }
        let scaler = Scaler::fit(x, n, d);
        let z = gpu.upload("scaled cells", &scaler.apply(x))?;
        let y = gpu.upload_u32("labels", labels);
        let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
        let mut glorot = |rows: usize, cols: usize| -> Vec<f32> {
            let a = (6.0 / (rows + cols) as f32).sqrt();
            (0..rows * cols).map(|_| rng.gen_range(-a..a)).collect()
        };
        let layers = if s.hidden == 0 {
            vec![(Param::new(gpu, "W", &vec![0.0; k * d], s.l2)?, Param::new(gpu, "b", &vec![0.0; k], 0.0)?)]
        } else {
            let h = s.hidden;
            vec![
                (Param::new(gpu, "W1", &glorot(h, d), s.l2)?, Param::new(gpu, "b1", &vec![0.0; h], 0.0)?),
                (Param::new(gpu, "W2", &glorot(k, h), s.l2)?, Param::new(gpu, "b2", &vec![0.0; k], 0.0)?),
            ]
        };
        let model = GpuClassifier { scaler, n_classes: k, hidden: s.hidden, layers };
        let logits = gpu.zeros("logits", n * k)?;
        let hid = gpu.zeros("hidden", n * s.hidden)?;
        let dhid = gpu.zeros("hidden gradient", n * s.hidden)?;
        let tk = &gpu.train;
        // One step recorded once, replayed `steps` times.
        let step = gpu.upload_u32("step", &[0]);
        let mut program = Program::default();
        let input = model.forward(gpu, &mut program, &z, n, &hid, &logits);
        gpu.dispatch(&mut program, &tk.softmax_residual, [n as u32, k as u32, 0, 0], &[(4, &logits), (5, &y)], Gpu::grid(n.div_ceil(64)));
        // Back through the output layer: its gradients, then (perceptron) the hidden layer's.
        let (w, b) = model.layers.last().expect("one layer at least");
        let width = if s.hidden == 0 { d } else { s.hidden };
        matmul(gpu, &mut program, Product::TN, &logits, input, &w.grad, (k, n, width));
        colsum(gpu, &mut program, &logits, &b.grad, (n, k));
        if s.hidden > 0 {
            let (w1, b1) = &model.layers[0];
            matmul(gpu, &mut program, Product::NN, &logits, &w.value, &dhid, (n, k, s.hidden));
            gpu.dispatch(&mut program, &tk.relu_mask, [(n * s.hidden) as u32, 0, 0, 0], &[(1, &hid), (4, &dhid)], Gpu::grid((n * s.hidden).div_ceil(256)));
            matmul(gpu, &mut program, Product::TN, &dhid, &z, &w1.grad, (s.hidden, n, d));
            colsum(gpu, &mut program, &dhid, &b1.grad, (n, s.hidden));
        }
        gpu.dispatch(&mut program, &tk.tick, [1, 0, 0, 0], &[(8, &step)], (1, 1));
        for (w, b) in &model.layers {
            w.adam(gpu, &mut program, &step, s.lr);
            b.adam(gpu, &mut program, &step, s.lr);
        }
        let report_every = s.steps.div_ceil(20).max(STEPS_PER_SUBMIT);
        let mut reported = 0;
        for start in (0..s.steps).step_by(STEPS_PER_SUBMIT) {
            let done = s.steps.min(start + STEPS_PER_SUBMIT);
            gpu.run(&program, done - start);
            if done < s.steps && done - reported >= report_every {
                // Reading the output bias (k values) waits for the steps so far.
                gpu.read(&model.layers.last().expect("one layer at least").1.value).await?;
                progress(done as f64 / s.steps as f64);
                reported = done;
            }
        }
        // A diverged fit is an error, not a classifier.
        let (w, _) = model.layers.last().expect("one layer at least");
        if let Some(v) = gpu.read(&w.value).await?.iter().find(|v| !v.is_finite()) {
            return Err(format!("the fit diverged (a weight became {v}); lower the learning rate"));
        }
        progress(1.0);
        Ok(model)
    }

    /// Records the forward pass into `logits`; returns the output layer's input (the scaled
    /// cells, or the hidden activations in `hid`).
    fn forward<'a>(&self, gpu: &Gpu, prog: &mut Program, z: &'a DeviceArray, n: usize, hid: &'a DeviceArray, logits: &DeviceArray) -> &'a DeviceArray {
        let d = self.scaler.mean.len();
        let k = self.n_classes;
        if self.hidden == 0 {
            let (w, b) = &self.layers[0];
            gpu.linear(prog, z, (&w.value, Some(&b.value)), logits, (n, d, k), false);
            return z;
        }
        let ((w1, b1), (w2, b2)) = (&self.layers[0], &self.layers[1]);
        gpu.linear(prog, z, (&w1.value, Some(&b1.value)), hid, (n, d, self.hidden), false);
        gpu.elementwise(prog, &gpu.activate, 1, &[(1, hid)], (n, self.hidden));
        gpu.linear(prog, hid, (&w2.value, Some(&b2.value)), logits, (n, self.hidden, k), false);
        hid
    }

    /// Class ids of `x` (`n` cells of the training width, log-normalised).
    pub async fn predict(&self, gpu: &Gpu, x: &[f32], n: usize) -> Result<Vec<u32>, String> {
        let d = self.scaler.mean.len();
        if x.len() != n * d {
            return Err(format!("{} values for {n} cells × {d} genes", x.len()));
        }
        let k = self.n_classes;
        let mut out = Vec::with_capacity(n);
        // Batches that keep the scaled cells within one binding.
        let batch = ((gpu.max_binding_bytes() / (4 * d.max(self.hidden).max(1) as u64)) as usize).clamp(1, 65_536);
        for start in (0..n).step_by(batch) {
            let rows = batch.min(n - start);
            let z = gpu.upload("scaled cells", &self.scaler.apply(&x[start * d..(start + rows) * d]))?;
            let hid = gpu.zeros("hidden", rows * self.hidden)?;
            let logits = gpu.zeros("logits", rows * k)?;
            let mut program = Program::default();
            self.forward(gpu, &mut program, &z, rows, &hid, &logits);
            gpu.run(&program, 1);
            let l = gpu.read(&logits).await?;
            out.extend(l.chunks_exact(k).map(|row| row.iter().enumerate().fold((0, f32::NEG_INFINITY), |a, (j, &v)| if v > a.1 { (j, v) } else { a }).0 as u32));
        }
        Ok(out)
    }
}

/// Which product [`matmul`] computes.
#[derive(Clone, Copy, PartialEq)]
enum Product {
    /// `y = a·b`
    NN,
    /// `y = aᵀ·b`
    TN,
}

/// `y = a·b` or `y = aᵀ·b`, `(rows, inner, cols)` of `y` and the sum; tiled, or direct on a CPU
/// adapter (four columns per invocation when `cols` is a multiple of 4).
fn matmul(gpu: &Gpu, prog: &mut Program, product: Product, a: &DeviceArray, b: &DeviceArray, y: &DeviceArray, (rows, inner, cols): (usize, usize, usize)) {
    let dims = [rows as u32, inner as u32, cols as u32, (product == Product::TN) as u32];
    let arrays = [(1, a), (2, b), (4, y)];
    if gpu.direct && cols.is_multiple_of(4) {
        gpu.dispatch(prog, &gpu.train.matmul_direct4, dims, &arrays, Gpu::grid((rows * cols / 4).div_ceil(64)));
    } else if gpu.direct {
        gpu.dispatch(prog, &gpu.train.matmul_direct, dims, &arrays, Gpu::grid((rows * cols).div_ceil(64)));
    } else {
        gpu.dispatch(prog, &gpu.train.matmul, dims, &arrays, (cols.div_ceil(16) as u32, rows.div_ceil(16) as u32));
    }
}

/// `y[c] = Σ_r a[r, c]` for `a` rows × cols.
fn colsum(gpu: &Gpu, prog: &mut Program, a: &DeviceArray, y: &DeviceArray, (rows, cols): (usize, usize)) {
    gpu.dispatch(prog, &gpu.train.colsum, [rows as u32, cols as u32, 0, 0], &[(1, a), (4, y)], Gpu::grid(cols.div_ceil(64)));
}
