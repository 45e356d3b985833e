//! The CPU reference forward pass: runs a [`GraphSpec`] from a bundle's tensors with ndarray.
//!
//! This is the yardstick: the tch implementation (native) and the WGSL kernels (browser) are
//! tested against it. Inference semantics only (dropout = identity, batch norm uses running
//! statistics).
use crate::bundle::GeneratorBundle;
use crate::error::{CoreError, Result};
use crate::graph::{layer_param, Activation, BlockNames, GraphSpec, Layer, Stack};
use crate::tensor::Tensor;
use ndarray::{Array1, Array2, ArrayView2, Axis};
use std::collections::{BTreeMap, HashMap};

/// The version of what decoding means (bumped when the generator's output semantics change, e.g.
/// 2: decoded cells projected onto valid cells; 4: the projection keeps the decoder's zeros and a
/// decoder may end in a floor). Caches of decoded cells and of codes optimised through the
/// generator key on it.
pub const DECODE_VERSION: u32 = 4;

/// A bundle's tensors unpacked to f32 once, ready for repeated forward passes.
pub struct CpuModel {
    pub spec: GraphSpec,
    params: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl CpuModel {
    pub fn from_bundle(b: &GeneratorBundle) -> Result<Self> {
        Self::new(b.spec.clone(), &b.tensors)
    }

    pub fn new(spec: GraphSpec, tensors: &BTreeMap<String, Tensor>) -> Result<Self> {
        let mut params = HashMap::new();
        for (name, shape) in spec.params() {
            let t = tensors.get(&name).ok_or_else(|| CoreError::data(format!("bundle/tensors/{name}"), "missing"))?;
            if t.shape != shape {
                return Err(CoreError::data(
                    format!("bundle/tensors/{name}"),
                    format!("has shape {:?}, the graph needs {:?}", t.shape, shape),
                ));
            }
            params.insert(name, (shape, t.to_f32()?));
        }
        Ok(CpuModel { spec, params })
    }

    fn vec(&self, name: &str) -> ArrayView2<'_, f32> {
        let (_, v) = &self.params[name];
        ArrayView2::from_shape((1, v.len()), v).expect("1×n view")
    }
    fn mat(&self, name: &str) -> ArrayView2<'_, f32> {
        let (s, v) = &self.params[name];
        ArrayView2::from_shape((s[0], s[1]), v).expect("shape checked at load")
    }
    fn linear(&self, x: &Array2<f32>, w: &str, b: Option<&str>) -> Array2<f32> {
        let mut y = x.dot(&self.mat(w).t());
        if let Some(b) = b {
            y += &self.vec(b);
        }
        y
    }

    /// Runs a stack (encoder, decoder or task head).
    pub fn run_stack(&self, stack: &Stack, x: Array2<f32>) -> Array2<f32> {
        let p = &stack.prefix;
        let mut x = x;
        for (k, l) in stack.layers.iter().enumerate() {
            let name = |param: &str| layer_param(p, k, param);
            x = match *l {
                Layer::Linear { bias, .. } => {
                    let b = name("bias");
                    self.linear(&x, &name("weight"), bias.then_some(b.as_str()))
                }
                Layer::BatchNorm1d { eps, .. } => {
                    let (w, b) = (self.vec(&name("weight")), self.vec(&name("bias")));
                    let (m, v) = (self.vec(&name("running_mean")), self.vec(&name("running_var")));
                    let scale = &w / &v.mapv(|v| (v + eps).sqrt());
                    let shift = &b - &(&m * &scale);
                    x * &scale + &shift
                }
                Layer::LayerNorm { eps, .. } => layer_norm(x, self.vec(&name("weight")), self.vec(&name("bias")), eps),
                Layer::PRelu { num_parameters } => {
                    let a = self.vec(&name("weight"));
                    if num_parameters == 1 {
                        let a = a[[0, 0]];
                        x.mapv(|v| if v >= 0.0 { v } else { a * v })
                    } else {
                        let mut x = x;
                        for mut row in x.rows_mut() {
                            for (v, &s) in row.iter_mut().zip(a.iter()) {
                                if *v < 0.0 {
                                    *v *= s;
                                }
                            }
                        }
                        x
                    }
                }
                Layer::Act(a) => x.mapv(|v| activate(a, v)),
                Layer::Dropout { .. } => x,
                Layer::Floor { below } => x.mapv(|v| if v < below { 0.0 } else { v }),
                Layer::L2Normalize { eps } => {
                    let mut x = x;
                    for mut row in x.rows_mut() {
                        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(eps);
                        row.mapv_inplace(|v| v / n);
                    }
                    x
                }
            };
        }
        x
    }

    /// Log-normalised cells (aligned to the bundle's genes) → latents.
    pub fn encode(&self, x: Array2<f32>) -> Result<Array2<f32>> {
        let enc = self.spec.encoder.as_ref().ok_or_else(|| {
            CoreError::Mismatch("this bundle has no encoder (a recipient's bundle); encoding needs the full bundle".into())
        })?;
        Ok(self.run_stack(enc, x))
    }

    /// Latents → log-normalised cells.
    pub fn decode(&self, z: Array2<f32>) -> Array2<f32> {
        self.run_stack(&self.spec.decoder, z)
    }

    /// `U(z_t, t, τ(c))`: the denoiser's estimate of `z_0` (see [`crate::graph::DenoiserSpec`] for the wiring).
    pub fn denoise(&self, z_t: &Array2<f32>, t: &[u32], classes: &[u32]) -> Result<Array2<f32>> {
        let d = self.spec.denoiser.as_ref().ok_or_else(|| CoreError::Mismatch("this bundle has no denoiser".into()))?;
        if t.len() != z_t.nrows() || classes.len() != z_t.nrows() {
            return Err(CoreError::data("denoise", "t, classes and z_t must have one entry per row"));
        }
        if let Some(&c) = classes.iter().find(|&&c| c as usize >= d.n_classes) {
            return Err(CoreError::data("denoise", format!("class id {c} but the denoiser has {} classes", d.n_classes)));
        }
        let n = d.names();
        let tf: Vec<f32> = t.iter().map(|&v| v as f32).collect();
        let temb = sinusoidal(&tf, d.emb_dim);
        let h = self.linear(&temb, &n.time[0].weight, Some(&n.time[0].bias)).mapv(silu);
        let mut e = self.linear(&h, &n.time[1].weight, Some(&n.time[1].bias));
        let table = self.mat(&n.class_table);
        for (mut row, &c) in e.rows_mut().into_iter().zip(classes) {
            row += &table.row(c as usize);
        }
        let e_act = e.mapv(silu);
        let block = |b: &BlockNames, h: &Array2<f32>| -> Array2<f32> {
            let y = self.linear(h, &b.linear.weight, Some(&b.linear.bias)) + self.linear(&e_act, &b.emb.weight, Some(&b.emb.bias));
            layer_norm(y, self.vec(&b.norm.weight), self.vec(&b.norm.bias), d.norm_eps).mapv(silu)
        };
        let mut h = z_t.clone();
        let mut skips = Vec::with_capacity(n.down.len());
        for b in &n.down {
            h = block(b, &h);
            skips.push(h.clone());
        }
        for j in (0..n.up.len()).rev() {
            h = block(&n.up[j], &h) + &skips[j];
        }
        Ok(self.linear(&h, &n.out.weight, Some(&n.out.bias)))
    }

    /// The single-step generator `G(z) = P(D(U(z, t, τ(c))))` used for decoding latent codes,
    /// where `P` projects onto valid cells of the bundle's space
    /// ([`crate::graph::ExpressionSpace::project`]: non-negative, `Σ expm1 = target_sum`).
    pub fn generate(&self, z: &Array2<f32>, t: u32, classes: &[u32]) -> Result<Array2<f32>> {
        let ts = vec![t; z.nrows()];
        let mut x = self.decode(self.denoise(z, &ts, classes)?);
        self.spec.space.project(&mut x);
        Ok(x)
    }

    /// Softmax class probabilities of the task head on latent features.
    pub fn task_head(&self, features: Array2<f32>) -> Result<Array2<f32>> {
        let h = self.spec.task_head.as_ref().ok_or_else(|| CoreError::Mismatch("this bundle has no task head".into()))?;
        Ok(softmax_rows(self.run_stack(h, features)))
    }
}

pub fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

pub fn activate(a: Activation, v: f32) -> f32 {
    match a {
        Activation::Identity => v,
        Activation::Relu => v.max(0.0),
        Activation::Silu => silu(v),
        // ln(1+e^x) without overflow, matching torch's threshold of 20.
        Activation::Softplus => {
            if v > 20.0 {
                v
            } else {
                v.exp().ln_1p()
            }
        }
        Activation::Tanh => v.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
    }
}

fn layer_norm(x: Array2<f32>, w: ArrayView2<f32>, b: ArrayView2<f32>, eps: f32) -> Array2<f32> {
    let mut x = x;
    for mut row in x.rows_mut() {
        let n = row.len() as f32;
        let mean = row.sum() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, &g), &bb) in row.iter_mut().zip(w.iter()).zip(b.iter()) {
            *v = (*v - mean) * inv * g + bb;
        }
    }
    x
}

/// Sinusoidal timestep embedding: `[cos(t·f_k) for k < dim/2] ++ [sin(t·f_k)]`,
/// `f_k = exp(−ln(10000)·k/(dim/2))`.
pub fn sinusoidal(t: &[f32], dim: usize) -> Array2<f32> {
    let half = dim / 2;
    let freqs: Array1<f32> = (0..half).map(|k| (-(10000f32).ln() * k as f32 / half as f32).exp()).collect();
    let mut out = Array2::<f32>::zeros((t.len(), dim));
    for (i, &tv) in t.iter().enumerate() {
        for k in 0..half {
            let a = tv * freqs[k];
            out[[i, k]] = a.cos();
            out[[i, half + k]] = a.sin();
        }
    }
    out
}

pub fn softmax_rows(mut x: Array2<f32>) -> Array2<f32> {
    for mut row in x.axis_iter_mut(Axis(0)) {
        let m = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.sum();
        row.mapv_inplace(|v| v / s);
    }
    x
}
