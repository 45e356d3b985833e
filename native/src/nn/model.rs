//! tch networks built from the graph spec ([`scdd_core::graph`]).
//!
//! [`TchModel`] holds one [`nn::VarStore`] whose variable names are exactly the names
//! [`GraphSpec::params`] lists (`encoder.1.weight`, `denoiser.down.0.norm.bias`, ...), so a
//! bundle's tensors load by name and export is "iterate `params()` and copy". The forward pass
//! follows [`scdd_core::reference::CpuModel`] layer by layer (same sinusoid, same block order);
//! the CPU reference is the definition of what the numbers mean and the tests hold this module
//! to it within 1e-4.
//!
//! # For distillation
//!
//! ```ignore
//! let mut m = TchModel::from_bundle(&bundle, device)?;   // needs the encoder for E(x)
//! m.freeze();                                           // U, D, E fixed: only Z is optimised
//! let feats = m.encode(&x_real, false)?;                // (B, L), L2-normalised
//! let z = Tensor::zeros([n, l], (Kind::Float, device)).set_requires_grad(true);
//! let t = Tensor::full([n], t0 as i64, (Kind::Int64, device));
//! let cells = m.generate(&z, &t, &class_ids)?;           // D(U(z, t, τ(c))), grads reach z
//! ```
//! In a generator bundle written by `train-generator` the encoder ends with a fixed `√L·I`
//! linear layer (see [`crate::generator::scale_latents`]): latents, and therefore latent codes,
//! lie on the sphere of radius `√L`, not on the unit sphere. Nothing special is needed to use
//! it; just do not renormalise codes to unit length.
//!
//! `encode`/`decode`/`denoise`/`generate` use inference semantics (BatchNorm running
//! statistics, no dropout) and are differentiable with respect to their inputs.
//! [`TchModel::encode_mode`]/[`TchModel::decode_mode`] with [`Mode::Train`] are what the
//! trainers use. Tensors are f32; `t` may be any numeric kind (integer timesteps); `classes`
//! must be Int64 class ids `< n_classes` (checked by [`TchModel::check_classes`]).
use crate::error::{err, bail, Context, Result};
use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use scdd_core::bundle::GeneratorBundle;
use scdd_core::graph::{layer_param, Activation, BlockNames, DenoiserSpec, GraphSpec, Layer, LinearNames, ParamRole, ParamSpec, Stack};
use scdd_core::tensor::Tensor as CoreTensor;
use std::collections::{BTreeMap, HashMap, HashSet};
use tch::{nn, Device, Kind, Tensor};

/// Forward-pass semantics.
pub enum Mode<'a> {
    /// Inference: BatchNorm uses running statistics, dropout is the identity.
    Eval,
    /// Training: BatchNorm normalises with batch statistics and updates its running statistics
    /// (momentum 0.1, as PyTorch), dropout is active. Masks come from the given seeded stream,
    /// or from torch's global generator when `None`.
    Train(Option<&'a mut ChaCha8Rng>),
    /// Inference, except that the decoder's [`Layer::Floor`] is the identity: distillation
    /// matches decoded cells by gradient, and a gene the floor switched off would have none.
    Matching,
}

impl Mode<'_> {
    fn training(&self) -> bool {
        matches!(self, Mode::Train(_))
    }
}

/// A graph spec with its parameters in a tch `VarStore` on one device.
pub struct TchModel {
    pub vs: nn::VarStore,
    pub spec: GraphSpec,
    pub device: Device,
    /// Shallow handles to the VarStore's variables, by full parameter name.
    params: HashMap<String, Tensor>,
    /// Names of the buffers (BatchNorm running statistics): state, not trained.
    buffers: HashSet<String>,
}

/// A core tensor as a tch tensor on `device` (f32).
pub fn from_core(t: &CoreTensor, device: Device) -> Result<Tensor> {
    let v = t.to_f32()?;
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    Ok(Tensor::from_slice(&v).reshape(&shape).to_device(device))
}

/// A tch tensor (any device, any float kind) as a core f32 tensor.
pub fn to_core(t: &Tensor) -> Result<CoreTensor> {
    let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    let v = to_vec_f32(t);
    Ok(CoreTensor::from_f32(shape, &v)?)
}

/// All elements as a Vec<f32> (row-major).
pub fn to_vec_f32(t: &Tensor) -> Vec<f32> {
    let flat = t.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous().view([-1]);
    let n = flat.numel();
    let mut v = vec![0f32; n];
    flat.copy_data(&mut v, n);
    v
}

/// A dense ndarray matrix as a tch tensor on `device`.
pub fn from_array(a: &ndarray::Array2<f32>, device: Device) -> Tensor {
    let (r, c) = a.dim();
    let t = match a.as_slice() {
        Some(s) => Tensor::from_slice(s),
        None => Tensor::from_slice(&a.iter().copied().collect::<Vec<_>>()),
    };
    t.reshape([r as i64, c as i64]).to_device(device)
}

/// A 2-D tch tensor as an ndarray matrix.
pub fn to_array(t: &Tensor) -> ndarray::Array2<f32> {
    let s = t.size();
    assert_eq!(s.len(), 2, "to_array needs a 2-D tensor, got {s:?}");
    ndarray::Array2::from_shape_vec((s[0] as usize, s[1] as usize), to_vec_f32(t)).expect("shape")
}

// ------------------------------------------------------------------------------------------
// Initialisation (PyTorch defaults, drawn from a seeded Rust stream)
// ------------------------------------------------------------------------------------------

/// Fresh values for parameters, by role ([`ParamSpec`]): linear weights and biases as
/// PyTorch's `nn.Linear` (`U(−1/√in, 1/√in)`), the class table N(0, 1) as `nn.Embedding`,
/// norms weight 1 / bias 0, running mean 0 / var 1, PReLU 0.25. Each part (a stack's prefix,
/// `denoiser`) draws from its own seeded stream `(seed, "init/<part>")` in parameter order, so
/// adding a denoiser does not change the encoder's initial weights.
fn init_specs(specs: Vec<ParamSpec>, seed: u64) -> BTreeMap<String, CoreTensor> {
    let mut streams: HashMap<String, ChaCha8Rng> = HashMap::new();
    let mut out = BTreeMap::new();
    for p in specs {
        let rng = streams.entry(p.part.clone()).or_insert_with(|| crate::nn::rng::stream(seed, &format!("init/{}", p.part), 0));
        let n: usize = p.shape.iter().product();
        let uniform = |rng: &mut ChaCha8Rng, fan_in: usize| {
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            crate::nn::rng::uniforms(rng, n, -bound, bound)
        };
        let v = match p.role {
            ParamRole::LinearWeight => uniform(rng, p.shape[1]),
            ParamRole::LinearBias { fan_in } => uniform(rng, fan_in),
            ParamRole::ClassTable => crate::nn::rng::normals(rng, n),
            ParamRole::NormWeight | ParamRole::RunningVar => vec![1.0; n],
            ParamRole::NormBias | ParamRole::RunningMean => vec![0.0; n],
            ParamRole::PReluWeight => vec![0.25; n],
        };
        out.insert(p.name, CoreTensor::from_f32(p.shape, &v).expect("shape"));
    }
    out
}

/// Fresh parameters for every part of `spec` (see [`init_specs`]).
pub fn init_params(spec: &GraphSpec, seed: u64) -> BTreeMap<String, CoreTensor> {
    init_specs(spec.param_specs(), seed)
}

/// Fresh parameters of the denoiser alone (the same values [`init_params`] gives it).
pub fn init_denoiser(d: &DenoiserSpec, seed: u64) -> BTreeMap<String, CoreTensor> {
    init_specs(d.param_specs(), seed)
}

// ------------------------------------------------------------------------------------------
// The model
// ------------------------------------------------------------------------------------------

impl TchModel {
    /// Builds the VarStore from `spec` and loads every parameter `spec.params()` names from
    /// `tensors` (shapes checked). BatchNorm running statistics are non-trainable buffers.
    pub fn new(spec: GraphSpec, tensors: &BTreeMap<String, CoreTensor>, device: Device) -> Result<Self> {
        spec.validate().context("graph spec")?;
        let vs = nn::VarStore::new(device);
        let mut params = HashMap::new();
        let mut buffers = HashSet::new();
        for ParamSpec { name, shape, role, .. } in spec.param_specs() {
            let t = tensors.get(&name).ok_or_else(|| err!("tensor {name}: missing"))?;
            if t.shape != shape {
                bail!("tensor {name}: has shape {:?}, the graph needs {:?}", t.shape, shape);
            }
            let value = from_core(t, device).with_context(|| format!("tensor {name}"))?;
            let parts: Vec<&str> = name.split('.').collect();
            let (leaf, dirs) = parts.split_last().expect("non-empty name");
            let mut path = vs.root();
            for d in dirs {
                path = path.sub(*d);
            }
            let var = path.add(leaf, value, !role.is_buffer());
            if role.is_buffer() {
                buffers.insert(name.clone());
            }
            params.insert(name, var);
        }
        Ok(TchModel { vs, spec, device, params, buffers })
    }

    /// A model with freshly initialised parameters ([`init_params`]).
    pub fn init(spec: GraphSpec, seed: u64, device: Device) -> Result<Self> {
        let t = init_params(&spec, seed);
        Self::new(spec, &t, device)
    }

    /// Loads a bundle (validated first) onto `device`.
    pub fn from_bundle(b: &GeneratorBundle, device: Device) -> Result<Self> {
        b.validate().context("generator bundle")?;
        Self::new(b.spec.clone(), &b.tensors, device)
    }

    /// Every parameter and buffer as core tensors, in `spec.params()` order.
    pub fn to_tensors(&self) -> Result<BTreeMap<String, CoreTensor>> {
        let mut out = BTreeMap::new();
        for (name, _) in self.spec.params() {
            out.insert(name.clone(), to_core(&self.params[&name])?);
        }
        Ok(out)
    }

    /// A bundle holding this model's spec and weights.
    pub fn to_bundle(
        &self,
        genes: Vec<String>,
        label_column: String,
        classes: Vec<String>,
        metadata: BTreeMap<String, String>,
    ) -> Result<GeneratorBundle> {
        let b = GeneratorBundle { spec: self.spec.clone(), genes, label_column, classes, tensors: self.to_tensors()?, metadata };
        b.validate().context("exported bundle")?;
        Ok(b)
    }

    /// Whether `name` is a buffer (BatchNorm running statistics) rather than a trained parameter.
    pub fn is_buffer(&self, name: &str) -> bool {
        self.buffers.contains(name)
    }

    /// The variable `name` (a shallow handle sharing storage with the VarStore).
    pub fn param(&self, name: &str) -> Result<&Tensor> {
        self.params.get(name).ok_or_else(|| err!("parameter {name}: not in this model"))
    }

    /// Trainable parameters (not buffers) whose name starts with `prefix` (`""` = all), sorted
    /// by name.
    pub fn trainable(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .params
            .iter()
            .filter(|(n, _)| n.starts_with(prefix) && !self.buffers.contains(*n))
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Parameters and buffers whose name starts with `prefix`, sorted by name.
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> =
            self.params.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Turns gradients on or off for the trainable parameters under `prefix`.
    pub fn set_trainable(&mut self, prefix: &str, on: bool) {
        for (_, t) in self.trainable(prefix) {
            let _ = t.set_requires_grad(on);
        }
    }
    /// No parameter requires gradients (distillation optimises only the latent codes).
    pub fn freeze(&mut self) {
        self.set_trainable("", false);
    }
    /// Every trainable parameter requires gradients again.
    pub fn unfreeze(&mut self) {
        self.set_trainable("", true);
    }

    /// Copies values into this model's parameters/buffers (same names), without autograd.
    pub fn load_values<'a>(&self, values: impl IntoIterator<Item = (&'a String, &'a Tensor)>) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (name, src) in values {
                let mut dst = self.param(name)?.shallow_clone();
                if dst.size() != src.size() {
                    bail!("parameter {name}: shape {:?} cannot take {:?}", dst.size(), src.size());
                }
                dst.copy_(src);
            }
            Ok(())
        })
    }

    /// Deep copies (same device) of the parameters/buffers under `prefix`.
    pub fn snapshot(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.state(prefix).into_iter().map(|(n, t)| (n, t.detach().copy())).collect()
    }

    // --------------------------------------------------------------------------------------
    // Forward passes
    // --------------------------------------------------------------------------------------

    fn p(&self, name: &str) -> &Tensor {
        &self.params[name]
    }

    /// Runs a stack (encoder, decoder or task head) in the given mode.
    pub fn run_stack(&self, stack: &Stack, x: &Tensor, mode: &mut Mode) -> Tensor {
        let pre = &stack.prefix;
        let mut x = x.shallow_clone();
        for (k, l) in stack.layers.iter().enumerate() {
            let n = |p: &str| layer_param(pre, k, p);
            x = match *l {
                Layer::Linear { bias, .. } => {
                    let b = bias.then(|| self.p(&n("bias")));
                    x.linear(self.p(&n("weight")), b)
                }
                Layer::BatchNorm1d { eps, .. } => Tensor::batch_norm(
                    &x,
                    Some(self.p(&n("weight"))),
                    Some(self.p(&n("bias"))),
                    Some(self.p(&n("running_mean"))),
                    Some(self.p(&n("running_var"))),
                    mode.training(),
                    0.1,
                    eps as f64,
                    true,
                ),
                Layer::LayerNorm { dim, eps } => {
                    x.layer_norm([dim as i64], Some(self.p(&n("weight"))), Some(self.p(&n("bias"))), eps as f64, true)
                }
                Layer::PRelu { .. } => x.prelu(self.p(&n("weight"))),
                Layer::Act(a) => activate(&x, a),
                Layer::Dropout { p } => match mode {
                    Mode::Eval | Mode::Matching => x,
                    _ if p <= 0.0 => x,
                    Mode::Train(None) => x.dropout(p as f64, true),
                    Mode::Train(Some(rng)) => {
                        let mask = dropout_mask(rng, &x.size(), p).to_device(x.device());
                        x * mask
                    }
                },
                Layer::L2Normalize { eps } => {
                    let norm = x.norm_scalaropt_dim(2, [1i64], true).clamp_min(eps as f64);
                    x / norm
                }
                Layer::Floor { below } => match mode {
                    Mode::Eval => {
                        let keep = x.ge(below as f64);
                        x.where_self(&keep, &x.zeros_like())
                    }
                    _ => x,
                },
            };
        }
        x
    }

    /// Log-normalised cells (B, n_genes) → latents (B, L). `train = true` uses batch statistics
    /// and torch-RNG dropout; distillation wants `false`.
    pub fn encode(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut mode = if train { Mode::Train(None) } else { Mode::Eval };
        self.encode_mode(x, &mut mode)
    }

    pub fn encode_mode(&self, x: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let enc = self
            .spec
            .encoder
            .as_ref()
            .ok_or_else(|| err!("this bundle has no encoder (a recipient's bundle); encoding needs the full bundle"))?;
        Ok(self.run_stack(enc, x, mode))
    }

    /// Latents (B, L) → log-normalised cells (B, n_genes), inference semantics.
    pub fn decode(&self, z: &Tensor) -> Tensor {
        self.run_stack(&self.spec.decoder, z, &mut Mode::Eval)
    }

    pub fn decode_mode(&self, z: &Tensor, mode: &mut Mode) -> Tensor {
        self.run_stack(&self.spec.decoder, z, mode)
    }

    /// Errors unless every id in `classes` (Int64) is a valid class of the denoiser.
    pub fn check_classes(&self, classes: &Tensor) -> Result<()> {
        let d = self.denoiser_spec()?;
        if classes.numel() == 0 {
            return Ok(());
        }
        let (lo, hi) = (classes.min().int64_value(&[]), classes.max().int64_value(&[]));
        if lo < 0 || hi >= d.n_classes as i64 {
            bail!("class id {} but the denoiser has {} classes", if lo < 0 { lo } else { hi }, d.n_classes);
        }
        Ok(())
    }

    pub fn denoiser_spec(&self) -> Result<&DenoiserSpec> {
        self.spec.denoiser.as_ref().ok_or_else(|| err!("this bundle has no denoiser (a foundation-only bundle)"))
    }

    /// `U(z_t, t, τ(c))`: the denoiser's estimate of `z_0` (wiring in [`DenoiserSpec`]).
    /// `z_t` (B, L) f32, `t` (B) timesteps, `classes` (B) Int64.
    pub fn denoise(&self, z_t: &Tensor, t: &Tensor, classes: &Tensor) -> Result<Tensor> {
        let d = self.denoiser_spec()?;
        let n = d.names();
        let lin = |x: &Tensor, l: &LinearNames| x.linear(self.p(&l.weight), Some(self.p(&l.bias)));
        let temb = sinusoidal(t, d.emb_dim, z_t.device());
        let h = lin(&temb, &n.time[0]).silu();
        let e = lin(&h, &n.time[1]) + self.p(&n.class_table).index_select(0, classes);
        let e_act = e.silu();
        let block = |b: &BlockNames, h: &Tensor| -> Tensor {
            let y = lin(h, &b.linear) + lin(&e_act, &b.emb);
            y.layer_norm([b.norm.dim as i64], Some(self.p(&b.norm.weight)), Some(self.p(&b.norm.bias)), d.norm_eps as f64, true).silu()
        };
        let mut h = z_t.shallow_clone();
        let mut skips = Vec::with_capacity(n.down.len());
        for b in &n.down {
            h = block(b, &h);
            skips.push(h.shallow_clone());
        }
        for j in (0..n.up.len()).rev() {
            h = block(&n.up[j], &h) + &skips[j];
        }
        Ok(lin(&h, &n.out))
    }

    /// The single-step generator `G(z) = P(D(U(z, t, τ(c))))`, `P` the differentiable
    /// projection onto valid cells of the space (as the CPU reference's `generate`).
    pub fn generate(&self, z: &Tensor, t: &Tensor, classes: &Tensor) -> Result<Tensor> {
        Ok(project(&self.decode(&self.denoise(z, t, classes)?), &self.spec.space))
    }

    /// [`TchModel::generate`] with the decoder in [`Mode::Matching`] (no floor): what
    /// distillation differentiates. Equal to `generate` when the decoder has no floor.
    pub fn generate_for_matching(&self, z: &Tensor, t: &Tensor, classes: &Tensor) -> Result<Tensor> {
        let x = self.run_stack(&self.spec.decoder, &self.denoise(z, t, classes)?, &mut Mode::Matching);
        Ok(project(&x, &self.spec.space))
    }

    /// Number of scalar parameters (buffers excluded) under `prefix`.
    pub fn n_params(&self, prefix: &str) -> usize {
        self.trainable(prefix).iter().map(|(_, t)| t.numel()).sum()
    }
}

/// [`scdd_core::graph::ExpressionSpace::project`] on rows (B, G): `max(0, x + λ·n(x))` where
/// `x > 0` and 0 elsewhere, with `n = e^x` (log1p) or `1` (counts) and each row's `λ` solved, as
/// in the core, by safeguarded Newton in f64 inside the same closed-form bracket, all rows at
/// once. Gradients flow through `x + λ(x)·n(x)`, with `λ(x)` differentiated implicitly, and the
/// clamp.
pub fn project(x: &Tensor, space: &scdd_core::graph::ExpressionSpace) -> Tensor {
    if space.target_sum <= 0.0 {
        return x.relu();
    }
    let log1p = space.log1p;
    let target = space.target_sum as f64;
    let normal = |v: &Tensor| if log1p { v.exp() } else { v.ones_like() };
    let lambda = tch::no_grad(|| {
        let xd = x.to_kind(Kind::Double);
        let n = normal(&xd);
        let dim = Some([1i64].as_slice());
        // f(λ) = Σ count(max(0, x + λ n)) − target and its derivative, per row.
        let support = xd.gt(0.0);
        let f = |l: &Tensor| {
            let y = (&xd + l * &n).relu();
            let pos = y.gt(0.0).logical_and(&support).to_kind(Kind::Double);
            let (c, dc) = if log1p { let e = y.exp(); (&e - 1.0, e) } else { (y.shallow_clone(), y.ones_like()) };
            let s = (c * &pos).sum_dim_intlist(dim, true, Kind::Double) - target;
            let d = (dc * &n * &pos).sum_dim_intlist(dim, true, Kind::Double);
            (s, d)
        };
        let zero = xd.narrow(1, 0, 1).zeros_like();
        let (f0, d0) = f(&zero);
        let max = xd.amax(1, true).clamp_min(0.0);
        let top = if log1p { target.ln_1p() } else { target };
        let hi_below = (-&max + top).clamp_min(0.0) / normal(&max);
        let ratio = (&xd / &n).where_self(&xd.gt(0.0), &xd.zeros_like());
        let lo_above = -ratio.amax(1, true);
        let below = f0.lt(0.0);
        let mut lo = zero.where_self(&below, &lo_above);
        let mut hi = hi_below.where_self(&below, &zero);
        let mut l = zero.shallow_clone();
        let (mut fl, mut dl) = (f0, d0);
        let any_positive = xd.gt(0.0).any_dim(1, true);
        for _ in 0..200 {
            let done = fl.abs().le(1e-9 * target).logical_or(&any_positive.logical_not());
            if bool::try_from(done.all()).unwrap_or(true) {
                break;
            }
            let above = fl.gt(0.0);
            hi = l.where_self(&above, &hi);
            lo = lo.where_self(&above, &l);
            let newton = &l - &fl / dl.clamp_min(1e-300);
            let inside = newton.gt_tensor(&lo).logical_and(&newton.lt_tensor(&hi)).logical_and(&dl.gt(0.0));
            let next = newton.where_self(&inside, &((&lo + &hi) * 0.5));
            l = next.where_self(&done.logical_not(), &l);
            (fl, dl) = f(&l);
        }
        l.where_self(&any_positive, &zero).to_kind(Kind::Float)
    });
    // λ as a function of x, to first order (implicit function theorem on F(x, λ) = Σ count(y) −
    // target = 0): λ̃ = λ − (F(x, λ) − F(x, λ)|detached) / ∂F/∂λ. Its value is λ; its gradient
    // tells the optimiser that lowering one gene raises the others. Without it, pulling a
    // gene down is undone by the next projection, which lifts every other gene instead.
    let n = normal(x);
    let support = x.gt(0.0).to_kind(Kind::Float).detach();
    let pre = x + &lambda * &n;
    let pos = pre.gt(0.0).to_kind(Kind::Float).detach() * &support;
    let y = pre.relu() * &support;
    let (count, slope) = if log1p { (y.expm1(), y.exp()) } else { (y.shallow_clone(), y.ones_like()) };
    let dim = Some([1i64].as_slice());
    let total = (count * &pos).sum_dim_intlist(dim, true, Kind::Float);
    let d_lambda = (slope * &n * &pos).sum_dim_intlist(dim, true, Kind::Float).detach().clamp_min(1e-12);
    let lambda = &lambda - (&total - total.detach()) / d_lambda;
    (x + lambda * n).relu() * support
}

fn activate(x: &Tensor, a: Activation) -> Tensor {
    match a {
        Activation::Identity => x.shallow_clone(),
        Activation::Relu => x.relu(),
        Activation::Silu => x.silu(),
        Activation::Softplus => x.softplus(),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => x.sigmoid(),
    }
}

/// Inverted-dropout mask (`0` or `1/(1−p)`) from a seeded stream.
fn dropout_mask(rng: &mut ChaCha8Rng, size: &[i64], p: f32) -> Tensor {
    let n: i64 = size.iter().product();
    let threshold = ((p as f64) * 4_294_967_296.0) as u64;
    let keep = 1.0 / (1.0 - p);
    let v: Vec<f32> = (0..n).map(|_| if (rng.next_u32() as u64) < threshold { 0.0 } else { keep }).collect();
    Tensor::from_slice(&v).reshape(size)
}

/// The sinusoidal timestep embedding of [`scdd_core::reference::sinusoidal`]: frequencies
/// computed in f32 exactly as there, `[cos(t·f) ‖ sin(t·f)]`.
pub fn sinusoidal(t: &Tensor, dim: usize, device: Device) -> Tensor {
    let half = dim / 2;
    let freqs: Vec<f32> = (0..half).map(|k| (-(10000f32).ln() * k as f32 / half as f32).exp()).collect();
    let f = Tensor::from_slice(&freqs).to_device(device).unsqueeze(0);
    let a = t.to_kind(Kind::Float).to_device(device).unsqueeze(1) * f;
    Tensor::cat(&[a.cos(), a.sin()], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scdd_core::graph::{ExpressionSpace, NoiseSchedule};
    use scdd_core::reference::CpuModel;

    fn spec() -> GraphSpec {
        let enc = Stack::mlp("encoder", 30, &[16, 12], 8, 0.2, 0.1, vec![Layer::L2Normalize { eps: 1e-12 }]);
        let dec = Stack::mlp("decoder", 8, &[12, 16], 30, 0.0, 0.1, vec![Layer::Act(Activation::Softplus), Layer::Floor { below: 0.5 }]);
        GraphSpec {
            n_genes: 30,
            latent_dim: 8,
            space: ExpressionSpace::default(),
            encoder: Some(enc),
            decoder: dec,
            denoiser: Some(DenoiserSpec { latent_dim: 8, hidden: vec![16, 16, 8], emb_dim: 10, n_classes: 3, norm_eps: 1e-5 }),
            schedule: NoiseSchedule::default(),
            task_head: None,
        }
    }

    #[test]
    fn names_round_trip_and_forward_matches_reference() {
        let mut t = init_params(&spec(), 3);
        // non-trivial BatchNorm statistics
        for (name, v) in t.iter_mut() {
            if name.ends_with(".running_mean") || name.ends_with(".running_var") {
                let vals: Vec<f32> = (0..v.numel()).map(|i| 0.5 + 0.1 * i as f32).collect();
                *v = CoreTensor::from_f32(v.shape.clone(), &vals).unwrap();
            }
        }
        let m = TchModel::new(spec(), &t, Device::Cpu).unwrap();
        let names: Vec<String> = m.vs.variables().keys().cloned().collect();
        assert_eq!(names.len(), spec().params().len());
        for (n, _) in spec().params() {
            assert!(names.contains(&n), "{n} missing from the VarStore");
        }
        assert_eq!(m.to_tensors().unwrap(), t);
        let cpu = CpuModel::new(spec(), &t).unwrap();
        let x = ndarray::Array2::from_shape_fn((5, 30), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 4.0);
        let xt = from_array(&x, Device::Cpu);
        let close = |a: &ndarray::Array2<f32>, b: &Tensor| {
            let b = to_array(b);
            let d = (a - &b).mapv(f32::abs).fold(0f32, |m, &v| m.max(v));
            assert!(d < 1e-5, "max diff {d}");
        };
        let z = cpu.encode(x.clone()).unwrap();
        let zt = m.encode(&xt, false).unwrap();
        close(&z, &zt);
        close(&cpu.decode(z.clone()), &m.decode(&zt));
        // The floor: inference zeroes what lies below it; training and matching leave it.
        let floored = to_array(&m.decode(&zt));
        let smooth = to_array(&m.run_stack(&spec().decoder, &zt, &mut Mode::Matching));
        let below = smooth.iter().filter(|&&v| v < 0.5).count();
        assert!(below > 0 && below < smooth.len(), "{below} of {} values below the floor", smooth.len());
        for (f, s) in floored.iter().zip(&smooth) {
            assert_eq!(*f, if *s < 0.5 { 0.0 } else { *s });
        }
        let ts = [1u32, 10, 500, 999, 1000];
        let cs = [0u32, 1, 2, 1, 0];
        let tt = Tensor::from_slice(&ts.map(|v| v as i64));
        let ct = Tensor::from_slice(&cs.map(|v| v as i64));
        close(&cpu.denoise(&z, &ts, &cs).unwrap(), &m.denoise(&zt, &tt, &ct).unwrap());
        let g = cpu.generate(&z, 7, &cs).unwrap();
        close(&g, &m.generate(&zt, &Tensor::from_slice(&[7i64; 5]), &ct).unwrap());
        assert!(m.check_classes(&Tensor::from_slice(&[3i64])).is_err());
        // Last: training mode updates the batch-norm statistics.
        let trained = to_array(&m.run_stack(&spec().decoder, &zt, &mut Mode::Train(None)));
        assert!(trained.iter().filter(|&&v| v > 0.0 && v < 0.5).count() > 0, "training mode has no floor");
    }

    #[test]
    fn projection_matches_the_core_and_has_gradients() {
        use scdd_core::graph::ExpressionSpace;
        // Rows below the target, above it, with negatives, all ≤ 0, and already valid.
        let mut x = ndarray::Array2::from_shape_fn((5, 200), |(i, j)| {
            let v = ((i * 31 + j * 17) % 23) as f32 / 23.0;
            match i {
                0 => v - 0.2,
                1 => 3.0 * v + 2.5,
                2 => if j == 0 { 8.0 } else { v * 0.1 },
                3 => -v,
                _ => v,
            }
        });
        for space in [ExpressionSpace::default(), ExpressionSpace { target_sum: 500.0, log1p: false }] {
            let mut valid = x.slice(ndarray::s![4..5, ..]).to_owned();
            space.project(&mut valid);
            x.row_mut(4).assign(&valid.row(0));
            let xt = from_array(&x, Device::Cpu).set_requires_grad(true);
            let yt = project(&xt, &space);
            let mut want = x.clone();
            space.project(&mut want);
            let got = to_array(&yt.detach());
            let d = (&want - &got).mapv(f32::abs).fold(0f32, |m, &v| m.max(v));
            assert!(d < 1e-4, "tch vs core projection: max diff {d}");
            assert!((&got.row(4) - &x.row(4)).mapv(f32::abs).iter().all(|&v| v < 1e-4), "a valid cell is left alone");
            // The gradient (λ differentiated implicitly) against central differences.
            let w = Tensor::from_slice(&(0..200).map(|j| ((j * 13 % 7) as f32 - 3.0) / 3.0).collect::<Vec<_>>());
            let loss = |x: &Tensor| (project(x, &space) * &w).sum(Kind::Float);
            loss(&xt).backward();
            let g = to_array(&xt.grad());
            assert!(g.iter().all(|v| v.is_finite()));
            for (i, j) in [(0usize, 3usize), (1, 5), (1, 150), (2, 0), (2, 7)] {
                let eps = 1e-3;
                let shifted = |e: f32| {
                    let mut xe = x.clone();
                    xe[[i, j]] += e;
                    f64::try_from(loss(&from_array(&xe, Device::Cpu))).unwrap()
                };
                let fd = (shifted(eps) - shifted(-eps)) / (2.0 * eps as f64);
                let an = g[[i, j]] as f64;
                assert!((fd - an).abs() <= 0.05 * fd.abs().max(an.abs()) + 0.02, "∂L/∂x[{i},{j}]: {an} vs finite difference {fd}");
            }
        }
    }

    #[test]
    fn freezing_and_training_mode() {
        let mut m = TchModel::init(spec(), 1, Device::Cpu).unwrap();
        assert!(m.trainable("").iter().all(|(_, t)| t.requires_grad()));
        assert!(m.trainable("").iter().all(|(n, _)| !m.is_buffer(n)));
        assert!(m.is_buffer("encoder.2.running_mean") && !m.is_buffer("encoder.2.weight"));
        m.freeze();
        assert!(m.trainable("").iter().all(|(_, t)| !t.requires_grad()));
        m.set_trainable("denoiser.", true);
        assert!(m.trainable("denoiser.").iter().all(|(_, t)| t.requires_grad()));
        assert!(m.trainable("encoder.").iter().all(|(_, t)| !t.requires_grad()));
        // a training-mode pass moves the running statistics
        let before = to_vec_f32(m.param("encoder.2.running_mean").unwrap());
        let x = Tensor::rand([6, 30], (Kind::Float, Device::Cpu));
        let mut rng = crate::nn::rng::stream(0, "t", 0);
        let _ = m.encode_mode(&x, &mut Mode::Train(Some(&mut rng))).unwrap();
        assert_ne!(before, to_vec_f32(m.param("encoder.2.running_mean").unwrap()));
    }
}
