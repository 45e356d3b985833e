//! The distillation graph: a typed, self-contained description of every network scdd runs.
//!
//! A generator bundle carries a [`GraphSpec`] plus named tensors. Anything that can read the
//! spec can run the model: the native trainer (tch) builds its modules from it, the CPU
//! reference in [`crate::reference`] evaluates it with ndarray, and the browser build turns it
//! into WGSL kernels. Parameter names are derived here, in one place, by the `*_param`
//! functions, so every implementation agrees on them.
//!
//! Shapes follow PyTorch conventions: a linear layer's weight is `[out, in]` and computes
//! `y = x Wᵀ + b`.
use crate::error::{CoreError, Result};
use serde::{Deserialize, Serialize};

/// Element-wise nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    Identity,
    Relu,
    Silu,
    /// `ln(1 + e^x)`, used for non-negative outputs.
    Softplus,
    Tanh,
    Sigmoid,
}

/// One operation of a feed-forward [`Stack`]. Parameter tensors of layer `k` of a stack with
/// prefix `p` are named `p.k.<param>` (see [`layer_param`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Layer {
    /// Params: `weight [out, in]`, `bias [out]` (when `bias`).
    Linear { in_dim: usize, out_dim: usize, bias: bool },
    /// Inference uses running statistics: `(x − running_mean)/√(running_var + eps)·weight + bias`.
    /// Params: `weight, bias, running_mean, running_var`, all `[dim]`.
    BatchNorm1d { dim: usize, eps: f32 },
    /// Normalises over the feature axis. Params: `weight, bias`, `[dim]`.
    LayerNorm { dim: usize, eps: f32 },
    /// `max(0,x) + a·min(0,x)`, `a` shared (`num_parameters = 1`) or per feature. Params: `weight`.
    PRelu { num_parameters: usize },
    Act(Activation),
    /// Identity at inference; drop probability for training.
    Dropout { p: f32 },
    /// `x / max(‖x‖₂, eps)` per row.
    L2Normalize { eps: f32 },
    /// Inference: values below `below` become 0, genes the decoder leaves unexpressed (the
    /// projection onto valid cells keeps them 0); training: the identity, so every output keeps
    /// its gradient. The decoder's last layer when the bundle asks for it (`--floor`).
    Floor { below: f32 },
}

impl Layer {
    /// Names (without prefix), shapes and roles of this layer's parameters.
    pub fn param_roles(&self) -> Vec<(&'static str, Vec<usize>, ParamRole)> {
        match *self {
            Layer::Linear { in_dim, out_dim, bias } => {
                let mut v = vec![("weight", vec![out_dim, in_dim], ParamRole::LinearWeight)];
                if bias {
                    v.push(("bias", vec![out_dim], ParamRole::LinearBias { fan_in: in_dim }));
                }
                v
            }
            Layer::BatchNorm1d { dim, .. } => vec![
                ("weight", vec![dim], ParamRole::NormWeight),
                ("bias", vec![dim], ParamRole::NormBias),
                ("running_mean", vec![dim], ParamRole::RunningMean),
                ("running_var", vec![dim], ParamRole::RunningVar),
            ],
            Layer::LayerNorm { dim, .. } => vec![("weight", vec![dim], ParamRole::NormWeight), ("bias", vec![dim], ParamRole::NormBias)],
            Layer::PRelu { num_parameters } => vec![("weight", vec![num_parameters], ParamRole::PReluWeight)],
            Layer::Act(_) | Layer::Dropout { .. } | Layer::L2Normalize { .. } | Layer::Floor { .. } => vec![],
        }
    }

    /// Names (without prefix) and shapes of this layer's parameters.
    pub fn params(&self) -> Vec<(&'static str, Vec<usize>)> {
        self.param_roles().into_iter().map(|(n, s, _)| (n, s)).collect()
    }
}

/// What a parameter is: how it is initialised, whether it is trained, how a kernel uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParamRole {
    /// A linear layer's weight `[out, in]` (`y = x Wᵀ + b`).
    LinearWeight,
    /// A linear layer's bias `[out]`; `fan_in` is the layer's input width.
    LinearBias { fan_in: usize },
    /// BatchNorm/LayerNorm scale `[dim]`.
    NormWeight,
    /// BatchNorm/LayerNorm shift `[dim]`.
    NormBias,
    /// BatchNorm running statistics `[dim]`: buffers, not trained.
    RunningMean,
    RunningVar,
    /// PReLU slope(s).
    PReluWeight,
    /// The denoiser's class embedding table `[classes, emb]` (a row per class).
    ClassTable,
}

impl ParamRole {
    /// Buffers are state (BatchNorm running statistics), not trained parameters.
    pub fn is_buffer(self) -> bool {
        matches!(self, ParamRole::RunningMean | ParamRole::RunningVar)
    }
}

/// One parameter of a graph: full name, shape, role, and the part it belongs to (a stack's
/// prefix, or `denoiser`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: ParamRole,
    pub part: String,
}

/// The weight and bias of one linear layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearNames {
    pub weight: String,
    pub bias: String,
    pub in_dim: usize,
    pub out_dim: usize,
}

/// A LayerNorm's scale and shift.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NormNames {
    pub weight: String,
    pub bias: String,
    pub dim: usize,
}

/// One denoiser block: `SiLU(LN(linear(h) + emb(SiLU(e))))`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockNames {
    pub linear: LinearNames,
    pub emb: LinearNames,
    pub norm: NormNames,
}

/// Every named tensor of the denoiser, by its place in the wiring ([`DenoiserSpec`]). The tch
/// model, the CPU reference and the WGSL decoder all read their names from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenoiserNames {
    /// The time MLP: `time[0]` (emb → emb), SiLU, `time[1]` (emb → emb).
    pub time: [LinearNames; 2],
    pub class_table: String,
    /// `down[i]`, applied for i = 0..n.
    pub down: Vec<BlockNames>,
    /// `up[j]`, applied for j = n−2 down to 0, each followed by `+ skip_j`.
    pub up: Vec<BlockNames>,
    pub out: LinearNames,
}

/// `prefix.k.param`.
pub fn layer_param(prefix: &str, k: usize, param: &str) -> String {
    format!("{prefix}.{k}.{param}")
}

/// A sequence of layers applied in order; its parameters live under `prefix`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    pub prefix: String,
    pub layers: Vec<Layer>,
}

impl Stack {
    /// Input width (of the first linear layer).
    pub fn in_dim(&self) -> Option<usize> {
        self.layers.iter().find_map(|l| match l {
            Layer::Linear { in_dim, .. } => Some(*in_dim),
            _ => None,
        })
    }
    /// Output width (of the last linear layer).
    pub fn out_dim(&self) -> Option<usize> {
        self.layers.iter().rev().find_map(|l| match l {
            Layer::Linear { out_dim, .. } => Some(*out_dim),
            _ => None,
        })
    }
    /// One line for people: the widths of its linear layers and the other operations in order
    /// of first use, e.g. `1501 → 512 → 128 (BatchNorm1d, PReLU, L2Normalize)`.
    pub fn summary(&self) -> String {
        let mut widths: Vec<usize> = self.in_dim().into_iter().collect();
        let mut ops: Vec<String> = Vec::new();
        for l in &self.layers {
            let op = match l {
                Layer::Linear { out_dim, .. } => {
                    widths.push(*out_dim);
                    continue;
                }
                Layer::BatchNorm1d { .. } => "BatchNorm1d".to_string(),
                Layer::LayerNorm { .. } => "LayerNorm".to_string(),
                Layer::PRelu { .. } => "PReLU".to_string(),
                Layer::Act(a) => format!("{a:?}"),
                Layer::Dropout { .. } => "Dropout".to_string(),
                Layer::L2Normalize { .. } => "L2Normalize".to_string(),
                Layer::Floor { below } => format!("Floor {below}"),
            };
            if !ops.contains(&op) {
                ops.push(op);
            }
        }
        let chain = widths.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(" → ");
        if ops.is_empty() {
            chain
        } else {
            format!("{chain} ({})", ops.join(", "))
        }
    }

    /// Every parameter with its role, in layer order.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let mut out = Vec::new();
        for (k, l) in self.layers.iter().enumerate() {
            for (p, shape, role) in l.param_roles() {
                out.push(ParamSpec { name: layer_param(&self.prefix, k, p), shape, role, part: self.prefix.clone() });
            }
        }
        out
    }

    /// Every parameter: full name and shape.
    pub fn params(&self) -> Vec<(String, Vec<usize>)> {
        self.param_specs().into_iter().map(|p| (p.name, p.shape)).collect()
    }
    /// Checks that consecutive layers agree in width.
    pub fn validate(&self) -> Result<()> {
        let mut width: Option<usize> = None;
        for (k, l) in self.layers.iter().enumerate() {
            let need = match *l {
                Layer::Linear { in_dim, .. } => Some(in_dim),
                Layer::BatchNorm1d { dim, .. } | Layer::LayerNorm { dim, .. } => Some(dim),
                Layer::PRelu { num_parameters } if num_parameters > 1 => Some(num_parameters),
                _ => None,
            };
            if let (Some(w), Some(n)) = (width, need) {
                if w != n {
                    return Err(CoreError::data(
                        format!("graph/{}.{k}", self.prefix),
                        format!("expects width {n} but receives {w}"),
                    ));
                }
            }
            if let Layer::Linear { out_dim, .. } = *l {
                width = Some(out_dim);
            } else if width.is_none() {
                width = need;
            }
        }
        Ok(())
    }

    /// SCimilarity-style MLP: for each hidden size a block
    /// `[Dropout, Linear, BatchNorm1d, PReLU]`, then `Linear` to `out_dim` and `tail` layers.
    /// The first block's dropout is `input_dropout`, the others `dropout`.
    pub fn mlp(
        prefix: &str,
        in_dim: usize,
        hidden: &[usize],
        out_dim: usize,
        input_dropout: f32,
        dropout: f32,
        tail: Vec<Layer>,
    ) -> Stack {
        let mut layers = Vec::new();
        let mut d = in_dim;
        for (i, &h) in hidden.iter().enumerate() {
            let p = if i == 0 { input_dropout } else { dropout };
            if p > 0.0 {
                layers.push(Layer::Dropout { p });
            }
            layers.push(Layer::Linear { in_dim: d, out_dim: h, bias: true });
            layers.push(Layer::BatchNorm1d { dim: h, eps: 1e-5 });
            layers.push(Layer::PRelu { num_parameters: 1 });
            d = h;
        }
        layers.push(Layer::Linear { in_dim: d, out_dim, bias: true });
        layers.extend(tail);
        Stack { prefix: prefix.to_string(), layers }
    }
}

/// Linear β schedule (paper eq. 1–2): `β_t = β_min + (t−1)/(T−1)·(β_max − β_min)`, `t = 1..=T`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseSchedule {
    pub beta_min: f64,
    pub beta_max: f64,
    pub steps: u32,
}

impl Default for NoiseSchedule {
    fn default() -> Self {
        NoiseSchedule { beta_min: 1e-4, beta_max: 0.1, steps: 1000 }
    }
}

impl NoiseSchedule {
    pub fn beta(&self, t: u32) -> f64 {
        if self.steps <= 1 {
            return self.beta_min;
        }
        self.beta_min + (t.saturating_sub(1)) as f64 / (self.steps - 1) as f64 * (self.beta_max - self.beta_min)
    }
    /// `ᾱ_t = ∏_{i≤t} (1 − β_i)`; `ᾱ_0 = 1`.
    pub fn alpha_bar(&self, t: u32) -> f64 {
        (1..=t.min(self.steps)).map(|i| 1.0 - self.beta(i)).product()
    }
    /// Every `ᾱ_t` for `t = 0..=T`.
    pub fn alpha_bars(&self) -> Vec<f64> {
        let mut v = Vec::with_capacity(self.steps as usize + 1);
        let mut acc = 1.0;
        v.push(acc);
        for t in 1..=self.steps {
            acc *= 1.0 - self.beta(t);
            v.push(acc);
        }
        v
    }
    pub fn validate(&self) -> Result<()> {
        if !(self.beta_min > 0.0 && self.beta_min <= self.beta_max && self.beta_max < 1.0) {
            return Err(CoreError::param(
                "schedule.beta",
                format!("[{}, {}]", self.beta_min, self.beta_max),
                "need 0 < beta_min <= beta_max < 1",
            ));
        }
        if self.steps == 0 {
            return Err(CoreError::param("schedule.steps", 0, "must be >= 1"));
        }
        Ok(())
    }
}

/// The SCDG denoiser `U(z_t, t, τ(c))`, predicting `z_0` (paper eq. 3).
///
/// Forward, with `E = emb_dim`, hidden sizes `h_0..h_{n-1}`, `L = latent_dim`:
/// ```text
/// e   = time.2( SiLU( time.0( sinusoid(t, E) ) ) ) + class_table[c]          (B, E)
/// h   = z_t
/// for i in 0..n:           h = SiLU(LN(down.i.linear(h) + down.i.emb(SiLU(e)))); skip_i = h
/// for j in (0..n-1).rev(): h = SiLU(LN(up.j.linear(h)   + up.j.emb(SiLU(e)))) + skip_j
/// out = out.linear(h)                                                          (B, L)
/// ```
/// `down.i.linear: h_{i-1} → h_i` (h_{-1} = L), `up.j.linear: h_{j+1} → h_j`,
/// `out.linear: h_0 → L`. `sinusoid(t, E)[k] = cos(t·f_k)` for `k < E/2` and `sin(t·f_{k−E/2})`
/// after, `f_k = exp(−ln(10000)·k/(E/2))` (t is the integer timestep as a float).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DenoiserSpec {
    pub latent_dim: usize,
    pub hidden: Vec<usize>,
    pub emb_dim: usize,
    pub n_classes: usize,
    pub norm_eps: f32,
}

impl DenoiserSpec {
    pub const PREFIX: &'static str = "denoiser";

    pub fn reference(latent_dim: usize, n_classes: usize) -> Self {
        DenoiserSpec { latent_dim, hidden: vec![512, 512, 256, 128], emb_dim: 512, n_classes, norm_eps: 1e-5 }
    }

    /// Input/output widths of down block `i`.
    pub fn down_dims(&self, i: usize) -> (usize, usize) {
        (if i == 0 { self.latent_dim } else { self.hidden[i - 1] }, self.hidden[i])
    }
    /// Input/output widths of up block `j` (`j < hidden.len() − 1`).
    pub fn up_dims(&self, j: usize) -> (usize, usize) {
        (self.hidden[j + 1], self.hidden[j])
    }

    /// The names of every tensor, by place in the wiring: the one place they are spelled.
    pub fn names(&self) -> DenoiserNames {
        let p = Self::PREFIX;
        let e = self.emb_dim;
        let linear = |stem: String, in_dim: usize, out_dim: usize| LinearNames {
            weight: format!("{stem}.weight"),
            bias: format!("{stem}.bias"),
            in_dim,
            out_dim,
        };
        let block = |kind: &str, i: usize, (din, dout): (usize, usize)| BlockNames {
            linear: linear(format!("{p}.{kind}.{i}.linear"), din, dout),
            emb: linear(format!("{p}.{kind}.{i}.emb"), e, dout),
            norm: NormNames { weight: format!("{p}.{kind}.{i}.norm.weight"), bias: format!("{p}.{kind}.{i}.norm.bias"), dim: dout },
        };
        DenoiserNames {
            time: [linear(format!("{p}.time.0"), e, e), linear(format!("{p}.time.2"), e, e)],
            class_table: format!("{p}.class_table"),
            down: (0..self.hidden.len()).map(|i| block("down", i, self.down_dims(i))).collect(),
            up: (0..self.hidden.len().saturating_sub(1)).map(|j| block("up", j, self.up_dims(j))).collect(),
            out: linear(format!("{p}.out"), self.hidden[0], self.latent_dim),
        }
    }

    /// Every parameter with its role, derived from [`DenoiserSpec::names`].
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let n = self.names();
        let part = Self::PREFIX.to_string();
        let mut v = Vec::new();
        let lin = |l: &LinearNames, v: &mut Vec<ParamSpec>| {
            v.push(ParamSpec { name: l.weight.clone(), shape: vec![l.out_dim, l.in_dim], role: ParamRole::LinearWeight, part: part.clone() });
            v.push(ParamSpec {
                name: l.bias.clone(),
                shape: vec![l.out_dim],
                role: ParamRole::LinearBias { fan_in: l.in_dim },
                part: part.clone(),
            });
        };
        lin(&n.time[0], &mut v);
        lin(&n.time[1], &mut v);
        v.push(ParamSpec {
            name: n.class_table.clone(),
            shape: vec![self.n_classes, self.emb_dim],
            role: ParamRole::ClassTable,
            part: Self::PREFIX.to_string(),
        });
        let block = |b: &BlockNames, v: &mut Vec<ParamSpec>| {
            lin(&b.linear, v);
            lin(&b.emb, v);
            let norm = |name: &String, role| ParamSpec { name: name.clone(), shape: vec![b.norm.dim], role, part: Self::PREFIX.to_string() };
            v.push(norm(&b.norm.weight, ParamRole::NormWeight));
            v.push(norm(&b.norm.bias, ParamRole::NormBias));
        };
        for b in &n.down {
            block(b, &mut v);
        }
        for b in n.up.iter().rev() {
            block(b, &mut v);
        }
        lin(&n.out, &mut v);
        v
    }

    /// Every parameter: full name and shape.
    pub fn params(&self) -> Vec<(String, Vec<usize>)> {
        self.param_specs().into_iter().map(|p| (p.name, p.shape)).collect()
    }

    pub fn validate(&self) -> Result<()> {
        if self.hidden.is_empty() || self.emb_dim == 0 || !self.emb_dim.is_multiple_of(2) || self.n_classes == 0 {
            return Err(CoreError::param(
                "denoiser",
                format!("hidden={:?} emb_dim={} n_classes={}", self.hidden, self.emb_dim, self.n_classes),
                "need at least one hidden layer, an even emb_dim and at least one class",
            ));
        }
        Ok(())
    }
}

/// What the encoder expects as input and what the decoder produces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpressionSpace {
    /// Cells are scaled to this total before `log1p` (scanpy `normalize_total`).
    pub target_sum: f32,
    pub log1p: bool,
}

impl Default for ExpressionSpace {
    fn default() -> Self {
        ExpressionSpace { target_sum: 1e4, log1p: true }
    }
}

impl ExpressionSpace {
    /// The value under `uns/scdd_space` that marks a file's X as already in this space (scdd's
    /// synthetic cells), so readers take it as it is instead of normalising it again.
    pub fn tag(&self) -> String {
        format!("log1p_normalized:{}", self.target_sum)
    }

    /// The largest value a cell can hold in this space (`log1p(target_sum)` when log1p).
    pub fn max_value(&self) -> f32 {
        if self.log1p {
            self.target_sum.ln_1p()
        } else {
            self.target_sum
        }
    }

    /// Projects decoder outputs onto valid cells of this space, in place. A valid cell is
    /// non-negative and its counts sum to `target_sum` (`Σ expm1(x) = target_sum` when log1p).
    /// Each cell moves along the normal of that constraint at the cell itself, keeping its
    /// support: `y = max(0, x + λ·∇g(x))` where `x > 0`, and `y = 0` where `x ≤ 0` (genes the
    /// decoder switched off, e.g. by its [`Layer::Floor`], stay off), with `g(x) = Σ expm1(x)`
    /// (`∇g = e^x`; counts space: `∇g = 1`, which makes this the Euclidean projection onto the
    /// scaled simplex over the support), and `λ` is the unique
    /// root of `Σ expm1(y(λ)) = target_sum` (the left side increases in `λ`). To first order this
    /// is the nearest valid cell in log space, so it keeps a cell's log profile, which rescaling
    /// the counts does not: on the class-mean cells of pbmc3k, human_kidney and pbmc68k_reduced
    /// (`../shared/data`), count rescaling cost scikit-learn's logistic regression up to 22
    /// accuracy points, this projection none. Rows without a positive value stay zero (no cell
    /// to project). Every decoder (tch, the CPU reference, the browser's WGSL decode on its
    /// read-back) applies it after the decoder network.
    pub fn project(&self, x: &mut ndarray::Array2<f32>) {
        for mut row in x.rows_mut() {
            if self.target_sum <= 0.0 || row.iter().all(|&v| v <= 0.0) {
                row.mapv_inplace(|v| v.max(0.0));
                continue;
            }
            let xs: Vec<f64> = row.iter().map(|&v| v as f64).collect();
            let lambda = self.projection_lambda(&xs);
            let log1p = self.log1p;
            for (o, &v) in row.iter_mut().zip(&xs) {
                let n = if log1p { v.exp() } else { 1.0 };
                *o = if v > 0.0 { (v + lambda * n).max(0.0) as f32 } else { 0.0 };
            }
        }
    }

    /// `λ` of [`ExpressionSpace::project`] for one row with a positive value:
    /// safeguarded Newton inside a closed-form bracket (f64).
    pub fn projection_lambda(&self, x: &[f64]) -> f64 {
        let target = self.target_sum as f64;
        let log1p = self.log1p;
        let normal = |v: f64| if log1p { v.exp() } else { 1.0 };
        let count = |v: f64| if log1p { v.exp_m1() } else { v };
        // f(λ) = Σ count(max(0, x + λ n)) − target, convex and increasing in λ.
        let f = |l: f64| -> (f64, f64) {
            let (mut s, mut d) = (-target, 0.0);
            for &v in x.iter().filter(|&&v| v > 0.0) {
                let n = normal(v);
                let y = v + l * n;
                if y > 0.0 {
                    s += count(y);
                    d += n * if log1p { y.exp() } else { 1.0 };
                }
            }
            (s, d)
        };
        let (f0, d0) = f(0.0);
        if f0.abs() <= 1e-9 * target {
            return 0.0;
        }
        // Bracket: below target, raising the largest gene alone to the full total is enough;
        // above it, λ = −max x/n(x) sets every gene to 0.
        let (mut lo, mut hi) = if f0 < 0.0 {
            let m = x.iter().cloned().fold(0.0, f64::max);
            let top = if log1p { target.ln_1p() } else { target };
            (0.0, (top - m).max(0.0) / normal(m))
        } else {
            (-x.iter().filter(|&&v| v > 0.0).map(|&v| v / normal(v)).fold(0.0, f64::max), 0.0)
        };
        let (mut l, mut fl, mut dl) = (0.0, f0, d0);
        for _ in 0..200 {
            if fl > 0.0 {
                hi = l;
            } else {
                lo = l;
            }
            let newton = if dl > 0.0 { l - fl / dl } else { f64::NAN };
            l = if newton > lo && newton < hi { newton } else { 0.5 * (lo + hi) };
            (fl, dl) = f(l);
            if fl.abs() <= 1e-9 * target || hi - lo <= 1e-15 * hi.abs().max(lo.abs()) {
                break;
            }
        }
        l
    }
}

/// Everything needed to run encoder, generator and task head from a bundle's tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphSpec {
    pub n_genes: usize,
    pub latent_dim: usize,
    pub space: ExpressionSpace,
    /// genes → latent. Absent in a recipient's bundle.
    pub encoder: Option<Stack>,
    /// latent → genes.
    pub decoder: Stack,
    /// Absent in a foundation-only bundle.
    pub denoiser: Option<DenoiserSpec>,
    pub schedule: NoiseSchedule,
    /// latent features → classes: the task head used by DC matching and the default evaluator.
    pub task_head: Option<Stack>,
}

impl GraphSpec {
    /// Every parameter the spec needs with its shape, role and part: the one list every
    /// implementation (tch, the CPU reference, WGSL) builds from.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let mut v = Vec::new();
        if let Some(e) = &self.encoder {
            v.extend(e.param_specs());
        }
        v.extend(self.decoder.param_specs());
        if let Some(d) = &self.denoiser {
            v.extend(d.param_specs());
        }
        if let Some(h) = &self.task_head {
            v.extend(h.param_specs());
        }
        v
    }

    /// All parameters the spec needs, with shapes.
    pub fn params(&self) -> Vec<(String, Vec<usize>)> {
        self.param_specs().into_iter().map(|p| (p.name, p.shape)).collect()
    }

    /// Structural checks: widths agree between parts and layers.
    pub fn validate(&self) -> Result<()> {
        if let Some(e) = &self.encoder {
            e.validate()?;
            check_dim("encoder input", e.in_dim(), self.n_genes)?;
            check_dim("encoder output", e.out_dim(), self.latent_dim)?;
        }
        self.decoder.validate()?;
        check_dim("decoder input", self.decoder.in_dim(), self.latent_dim)?;
        check_dim("decoder output", self.decoder.out_dim(), self.n_genes)?;
        if let Some(d) = &self.denoiser {
            d.validate()?;
            check_dim("denoiser latent", Some(d.latent_dim), self.latent_dim)?;
        }
        if let Some(h) = &self.task_head {
            h.validate()?;
            check_dim("task head input", h.in_dim(), self.latent_dim)?;
        }
        self.schedule.validate()
    }
}

fn check_dim(what: &str, got: Option<usize>, want: usize) -> Result<()> {
    match got {
        Some(g) if g == want => Ok(()),
        Some(g) => Err(CoreError::data(format!("graph/{what}"), format!("is {g}, expected {want}"))),
        None => Err(CoreError::data(format!("graph/{what}"), "has no linear layer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_gives_valid_cells() {
        let space = ExpressionSpace::default();
        let mut x = ndarray::array![[-0.5f32, 2.0, 11.7, 0.01], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 2.0]];
        space.project(&mut x);
        for (i, row) in x.rows().into_iter().enumerate().filter(|(i, _)| *i != 1) {
            let total: f64 = row.iter().map(|&v| (v as f64).exp_m1()).sum();
            assert!((total - 1e4).abs() < 1.0, "row {i}: Σ expm1 = {total}");
            assert!(row.iter().all(|&v| (0.0..=space.max_value() + 1e-5).contains(&v)), "row {i}: {row}");
        }
        assert_eq!(x[[0, 0]], 0.0, "negative values become 0");
        assert_eq!((x[[3, 0]], x[[3, 2]]), (0.0, 0.0), "genes switched off stay off: {}", x.row(3));
        assert!(x.row(1).iter().all(|&v| v == 0.0), "an empty cell stays empty");
        // Projecting twice changes nothing.
        let once = x.clone();
        space.project(&mut x);
        assert!(x.iter().zip(once.iter()).all(|(a, b)| (a - b).abs() < 1e-5));
        // Counts space: rows sum to the target.
        let counts = ExpressionSpace { target_sum: 100.0, log1p: false };
        let mut y = ndarray::array![[1.0f32, 3.0, -2.0]];
        counts.project(&mut y);
        // The Euclidean projection onto the simplex over the cell's support: a common shift of
        // the positive values; the negative one stays 0.
        let want = [49.0, 51.0, 0.0];
        assert!(y.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-4), "{y}");
        let mut z = ndarray::array![[1.0f32, 300.0, -2.0]];
        counts.project(&mut z);
        assert!(z.iter().zip([0.0, 100.0, 0.0]).all(|(a, b)| (a - b).abs() < 1e-4), "{z}");
    }

    #[test]
    fn projection_keeps_the_log_profile() {
        // A class-mean-like cell: many small values and a few large ones, Σ expm1 well below
        // the target. The projection must reach the target while leaving the small values
        // (where the cell types differ) nearly where they were; rescaling counts would
        // multiply each of them by about the same factor as the counts.
        let space = ExpressionSpace::default();
        let mut row: Vec<f32> = (0..2000).map(|g| 0.05 + 0.5 * ((g * 37 % 101) as f32 / 101.0)).collect();
        row[0] = 6.0;
        row[1] = 5.0;
        row[2] = 4.0;
        let before: f64 = row.iter().map(|&v| (v as f64).exp_m1()).sum();
        assert!(before < 0.5e4, "{before}");
        let mut x = ndarray::Array2::from_shape_vec((1, row.len()), row.clone()).unwrap();
        space.project(&mut x);
        let after: f64 = x.iter().map(|&v| (v as f64).exp_m1()).sum();
        assert!((after - 1e4).abs() < 0.5, "Σ expm1 = {after}");
        let small = (3..row.len()).map(|g| (x[[0, g]] - row[g]).abs()).fold(0.0f32, f32::max);
        assert!(small < 0.02, "small values moved by {small}");
        assert!(x[[0, 0]] > row[0] && x[[0, 0]] > x[[0, 1]] && x[[0, 1]] > x[[0, 2]]);
        // Above the target: values come down, the largest most, and clamp at 0.
        let mut y = ndarray::array![[9.0f32, 8.0, 0.1, 0.0]];
        space.project(&mut y);
        let total: f64 = y.iter().map(|&v| (v as f64).exp_m1()).sum();
        assert!((total - 1e4).abs() < 0.5, "Σ expm1 = {total}");
        assert!(y[[0, 0]] < 9.0 && y[[0, 1]] < 8.0 && y[[0, 3]] >= 0.0);
    }

    #[test]
    fn schedule_matches_closed_form() {
        let s = NoiseSchedule::default();
        assert!((s.beta(1) - 1e-4).abs() < 1e-15);
        assert!((s.beta(1000) - 0.1).abs() < 1e-12);
        let ab = s.alpha_bars();
        assert_eq!(ab.len(), 1001);
        assert!((ab[10] - s.alpha_bar(10)).abs() < 1e-12);
        assert!(ab[1000] < 1e-10, "ᾱ_T must approach zero, got {}", ab[1000]);
    }

    #[test]
    fn mlp_widths_validate() {
        let enc = Stack::mlp("encoder", 100, &[64, 32], 16, 0.4, 0.5, vec![Layer::L2Normalize { eps: 1e-12 }]);
        enc.validate().unwrap();
        assert_eq!((enc.in_dim(), enc.out_dim()), (Some(100), Some(16)));
        let names: Vec<_> = enc.params().into_iter().map(|p| p.0).collect();
        assert!(names.contains(&"encoder.1.weight".to_string()), "{names:?}");
        assert_eq!(enc.summary(), "100 → 64 → 32 → 16 (Dropout, BatchNorm1d, PReLU, L2Normalize)");
        let bad = Stack {
            prefix: "x".into(),
            layers: vec![Layer::Linear { in_dim: 3, out_dim: 4, bias: true }, Layer::LayerNorm { dim: 5, eps: 1e-5 }],
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn denoiser_params_cover_every_block() {
        let d = DenoiserSpec::reference(128, 5);
        let p = d.params();
        // 5 shared + 6 per block × (4 down + 3 up) + 2 out
        assert_eq!(p.len(), 5 + 6 * 7 + 2);
        assert_eq!(d.down_dims(0), (128, 512));
        assert_eq!(d.up_dims(2), (128, 256));
        // the order bundles have always had (weights are drawn and stored in it)
        let names: Vec<&str> = p.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(&names[..6], ["denoiser.time.0.weight", "denoiser.time.0.bias", "denoiser.time.2.weight", "denoiser.time.2.bias", "denoiser.class_table", "denoiser.down.0.linear.weight"]);
        assert_eq!(names[5 + 6 * 4], "denoiser.up.2.linear.weight");
        assert_eq!(names[5 + 6 * 4 + 4], "denoiser.up.2.norm.weight");
        assert_eq!(names[p.len() - 1], "denoiser.out.bias");
        let n = d.names();
        assert_eq!(n.up[0].linear.in_dim, 512);
        assert_eq!((n.out.in_dim, n.out.out_dim), (512, 128));
        let specs = d.param_specs();
        assert!(specs.iter().all(|s| !s.role.is_buffer() && s.part == "denoiser"));
        assert_eq!(specs[1].role, ParamRole::LinearBias { fan_in: 512 });
        assert_eq!(specs[4].role, ParamRole::ClassTable);
    }

    #[test]
    fn stack_roles_mark_batchnorm_statistics_as_buffers() {
        let s = Stack::mlp("encoder", 10, &[4], 2, 0.0, 0.0, vec![]);
        let specs = s.param_specs();
        let buffers: Vec<&str> = specs.iter().filter(|p| p.role.is_buffer()).map(|p| p.name.as_str()).collect();
        assert_eq!(buffers, ["encoder.1.running_mean", "encoder.1.running_var"]);
        assert_eq!(specs[1].role, ParamRole::LinearBias { fan_in: 10 });
        assert_eq!(specs.last().unwrap().role, ParamRole::LinearBias { fan_in: 4 });
    }
}
