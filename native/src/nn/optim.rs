//! The one optimiser module of every loop: AdamW (the trainers; distillation with weight decay
//! 0, i.e. Adam, on its codes) and an exponential moving average of weights, written out in tch
//! ops so that their state can be checkpointed (libtorch's optimizers do not expose theirs
//! through tch) and a resumed run continues bit-for-bit.
use crate::error::{err, bail, Result};
use std::collections::BTreeMap;
use tch::Tensor;

/// Decoupled-weight-decay Adam (Loshchilov & Hutter), PyTorch's `AdamW` update:
/// `p ← p·(1 − lr·wd)`, `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `p ← p − lr·m̂/(√v̂ + ε)` with bias-corrected `m̂, v̂`.
pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Updates taken so far.
    pub t: u64,
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Per-parameter scratch space: the update allocates nothing (large temporaries cost page
    /// faults on every step).
    buf: Vec<Tensor>,
}

impl AdamW {
    pub fn new(params: Vec<(String, Tensor)>, lr: f64, weight_decay: f64) -> Self {
        let m = params.iter().map(|(_, p)| p.zeros_like().detach()).collect();
        let v = params.iter().map(|(_, p)| p.zeros_like().detach()).collect();
        let buf = params.iter().map(|(_, p)| p.zeros_like().detach()).collect();
        AdamW { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, t: 0, params, m, v, buf }
    }

    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in self.params.iter_mut() {
            p.zero_grad();
        }
    }

    /// One update from the gradients currently stored on the parameters (parameters without a
    /// gradient are left alone).
    pub fn step(&mut self) {
        let grads: Vec<Option<Tensor>> = self.params.iter().map(|(_, p)| Some(p.grad()).filter(|g| g.defined())).collect();
        self.apply(&grads);
    }

    /// One update from explicitly given gradients, one per parameter in order (`None`: leave
    /// that parameter alone). Distillation computes its gradient itself (the memory trick).
    pub fn step_with(&mut self, grads: &[&Tensor]) {
        let grads: Vec<Option<Tensor>> = grads.iter().map(|g| Some(g.shallow_clone())).collect();
        self.apply(&grads);
    }

    fn apply(&mut self, grads: &[Option<Tensor>]) {
        assert_eq!(grads.len(), self.params.len(), "one gradient per parameter");
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc1 = 1.0 - b1.powi(self.t as i32);
        let bc2 = 1.0 - b2.powi(self.t as i32);
        let step_size = self.lr / bc1;
        let bc2_sqrt = bc2.sqrt();
        tch::no_grad(|| {
            let it = self.params.iter_mut().zip(self.m.iter_mut()).zip(self.v.iter_mut()).zip(self.buf.iter_mut()).zip(grads);
            for (((((_, p), m), v), buf), g) in it {
                let Some(g) = g else { continue };
                if self.weight_decay != 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - self.lr * self.weight_decay);
                }
                let _ = m.lerp_(g, 1.0 - b1);
                buf.copy_(g);
                let _ = buf.g_mul_(g);
                let _ = v.lerp_(buf, 1.0 - b2);
                // buf ← step_size · m / (√v / √bc2 + ε)
                buf.copy_(v);
                let _ = buf.sqrt_();
                let _ = buf.g_div_scalar_(bc2_sqrt);
                let _ = buf.g_add_scalar_(self.eps);
                let _ = buf.reciprocal_();
                let _ = buf.g_mul_(m);
                let _ = buf.g_mul_scalar_(step_size);
                let _ = p.g_sub_(buf);
            }
        });
    }

    /// The moment buffers by parameter name: `adam.m/<name>`, `adam.v/<name>`.
    pub fn state(&self) -> Vec<(String, &Tensor)> {
        let mut out = Vec::new();
        for (((n, _), m), v) in self.params.iter().zip(&self.m).zip(&self.v) {
            out.push((format!("adam.m/{n}"), m));
            out.push((format!("adam.v/{n}"), v));
        }
        out
    }

    /// Restores the moment buffers saved by [`AdamW::state`] and the step count.
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>, t: u64) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (((n, _), m), v) in self.params.iter().zip(self.m.iter_mut()).zip(self.v.iter_mut()) {
                for (key, dst) in [(format!("adam.m/{n}"), m), (format!("adam.v/{n}"), v)] {
                    let src = tensors.get(&key).ok_or_else(|| err!("checkpoint: optimizer state {key} missing"))?;
                    if src.size() != dst.size() {
                        bail!("checkpoint: optimizer state {key} has shape {:?}, expected {:?}", src.size(), dst.size());
                    }
                    dst.copy_(src);
                }
            }
            Ok(())
        })?;
        self.t = t;
        Ok(())
    }
}

/// Exponential moving average of parameters: `ema ← d·ema + (1−d)·p`, with the warm-up
/// `d = min(decay, (1+n)/(10+n))` after `n` updates.
pub struct Ema {
    pub decay: f64,
    pub updates: u64,
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    pub fn new(params: &[(String, Tensor)], decay: f64) -> Self {
        let shadow = params.iter().map(|(n, p)| (n.clone(), p.detach().copy())).collect();
        Ema { decay, updates: 0, shadow }
    }

    pub fn update(&mut self, params: &[(String, Tensor)]) {
        let n = self.updates as f64;
        let d = self.decay.min((1.0 + n) / (10.0 + n));
        self.updates += 1;
        tch::no_grad(|| {
            for ((_, s), (_, p)) in self.shadow.iter_mut().zip(params) {
                let _ = s.lerp_(p, 1.0 - d);
            }
        });
    }

    /// The averaged values by parameter name.
    pub fn shadow(&self) -> &[(String, Tensor)] {
        &self.shadow
    }

    pub fn load(&mut self, tensors: &BTreeMap<String, Tensor>, updates: u64) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (n, s) in self.shadow.iter_mut() {
                let key = format!("ema/{n}");
                let src = tensors.get(&key).ok_or_else(|| err!("checkpoint: EMA weight {key} missing"))?;
                s.copy_(src);
            }
            Ok(())
        })?;
        self.updates = updates;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn adamw_matches_closed_form_first_step() {
        // After one step with zero weight decay, Adam moves each weight by lr·sign(g) (m̂ = g,
        // v̂ = g²) up to ε.
        let p = Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
        let mut opt = AdamW::new(vec![("p".into(), p.shallow_clone())], 0.1, 0.0);
        let loss = (&p * Tensor::from_slice(&[1.0f32, -3.0, 0.5])).sum(Kind::Float);
        opt.zero_grad();
        loss.backward();
        opt.step();
        let v = crate::nn::to_vec_f32(&p);
        assert!((v[0] - 0.9).abs() < 1e-6 && (v[1] + 1.9).abs() < 1e-6 && (v[2] - 2.9).abs() < 1e-6, "{v:?}");
        // weight decay shrinks first
        let q = Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut opt = AdamW::new(vec![("q".into(), q.shallow_clone())], 0.1, 0.5);
        (&q * 0.0).sum(Kind::Float).backward();
        opt.step();
        assert!((crate::nn::to_vec_f32(&q)[0] - 0.95).abs() < 1e-6);
    }
}
