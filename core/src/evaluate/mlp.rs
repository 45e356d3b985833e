//! A one-hidden-layer perceptron on gene values, scikit-learn's `MLPClassifier` recipe: ReLU
//! hidden layer, Glorot-uniform initialisation from the seed, Adam, shuffled mini-batches, an
//! L2 penalty `alpha`, no input scaling. The step budget is epochs over the training set,
//! capped, so a handful of synthetic cells and a full training set both train to convergence
//! without the full set costing hundreds of epochs.
use super::{argmax_rows, check_predict, softmax_xent_grad, Evaluator, TrainingSet};
use crate::error::{CoreError, Result};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlpParams {
    pub hidden: usize,
    pub lr: f32,
    /// L2 penalty on the weights (scikit-learn's `alpha`, per mini-batch mean loss).
    pub alpha: f32,
    pub batch: usize,
    /// Passes over the training set ...
    pub epochs: usize,
    /// ... but at most this many Adam steps.
    pub max_steps: usize,
}

impl Default for MlpParams {
    fn default() -> Self {
        MlpParams { hidden: 128, lr: 1e-3, alpha: 1e-4, batch: 128, epochs: 200, max_steps: 600 }
    }
}

impl MlpParams {
    /// Adam steps for `n` training cells.
    pub fn steps(&self, n: usize) -> usize {
        let per_epoch = n.div_ceil(self.batch.max(1)).max(1);
        (per_epoch * self.epochs).min(self.max_steps).max(1)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Mlp {
    pub params: MlpParams,
    w1: Array2<f32>,
    b1: Array1<f32>,
    w2: Array2<f32>,
    b2: Array1<f32>,
    /// Mean training loss of the last step of the last fit.
    pub final_loss: f64,
}

struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    fn step(&mut self, params: &mut [f32], grad: &[f32], lr: f32) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        if self.m.is_empty() {
            self.m = vec![0.0; params.len()];
            self.v = vec![0.0; params.len()];
        }
        self.t += 1;
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        // Gradients under 1e-14 (whose step, under ε = 1e-8, is at most 1e-6 × lr) count as 0,
        // and moments decaying under 1e-30 are set to 0, so that none becomes a subnormal
        // float (slow in WebAssembly; see `flushed_exp`).
        let flush = |v: f32| if v.abs() < 1e-30 { 0.0 } else { v };
        for i in 0..params.len() {
            let g = if grad[i].abs() < 1e-14 { 0.0 } else { grad[i] };
            self.m[i] = flush(b1 * self.m[i] + (1.0 - b1) * g);
            self.v[i] = flush(b2 * self.v[i] + (1.0 - b2) * g * g);
            params[i] -= lr * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + eps);
        }
    }
}

fn glorot(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Array2<f32> {
    let bound = (6.0 / (rows + cols) as f32).sqrt();
    Array2::from_shape_fn((rows, cols), |_| rng.gen_range(-bound..bound))
}

impl Mlp {
    pub fn new(params: MlpParams) -> Self {
        Mlp { params, ..Default::default() }
    }

    fn logits(&self, x: ArrayView2<f32>) -> (Array2<f32>, Array2<f32>) {
        let h = (x.dot(&self.w1.t()) + &self.b1).mapv(|v| v.max(0.0));
        let o = h.dot(&self.w2.t()) + &self.b2;
        (h, o)
    }
}

impl Evaluator for Mlp {
    fn name(&self) -> String {
        "mlp".into()
    }

    fn fit(&mut self, data: &TrainingSet, seed: u64) -> Result<()> {
        self.fit_reporting(data, seed, &mut |_| {})
    }

    /// Reports after every twentieth of the optimiser steps.
    fn fit_reporting(&mut self, data: &TrainingSet, seed: u64, progress: &mut dyn FnMut(f64)) -> Result<()> {
        data.check()?;
        let p = self.params.clone();
        if p.hidden == 0 || p.batch == 0 || !(p.lr > 0.0 && p.lr.is_finite()) || p.alpha.is_nan() || p.alpha < 0.0 {
            return Err(CoreError::data("mlp", format!("{p:?}")));
        }
        let (n, d, k) = (data.x.nrows(), data.x.ncols(), data.n_classes);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        self.w1 = glorot(&mut rng, p.hidden, d);
        self.b1 = Array1::from_shape_fn(p.hidden, |_| rng.gen_range(-0.01f32..0.01));
        self.w2 = glorot(&mut rng, k, p.hidden);
        self.b2 = Array1::zeros(k);
        let mut opt: Vec<Adam> = (0..4).map(|_| Adam { m: vec![], v: vec![], t: 0 }).collect();
        let batch = p.batch.min(n);
        let mut order: Vec<usize> = (0..n).collect();
        let mut pos = n;
        let steps = p.steps(n);
        let every = steps.div_ceil(20).max(1);
        for step in 0..steps {
            if step > 0 && step % every == 0 {
                progress(step as f64 / steps as f64);
            }
            let xb;
            let lb: Vec<u32>;
            let (xv, labels) = if batch == n {
                (data.x.view(), data.labels)
            } else {
                if pos + batch > n {
                    for i in (1..n).rev() {
                        order.swap(i, rng.gen_range(0..=i));
                    }
                    pos = 0;
                }
                let idx = &order[pos..pos + batch];
                pos += batch;
                xb = data.x.select(Axis(0), idx);
                lb = idx.iter().map(|&i| data.labels[i]).collect();
                (xb.view(), lb.as_slice())
            };
            let (h, o) = self.logits(xv);
            let (g, loss) = softmax_xent_grad(o, labels);
            if !loss.is_finite() {
                return Err(CoreError::data("mlp", "the training loss became non-finite".to_string()));
            }
            self.final_loss = loss;
            let mut gw2 = g.t().dot(&h);
            gw2.scaled_add(p.alpha / xv.nrows() as f32, &self.w2);
            let gb2 = g.sum_axis(Axis(0));
            let mut dh = g.dot(&self.w2);
            dh.zip_mut_with(&h, |d, &hv| {
                if hv <= 0.0 {
                    *d = 0.0
                }
            });
            let mut gw1 = dh.t().dot(&xv);
            gw1.scaled_add(p.alpha / xv.nrows() as f32, &self.w1);
            let gb1 = dh.sum_axis(Axis(0));
            let slices = [
                (self.w1.as_slice_mut(), gw1.as_standard_layout().to_owned()),
                (self.b1.as_slice_mut(), gb1.insert_axis(Axis(0))),
                (self.w2.as_slice_mut(), gw2.as_standard_layout().to_owned()),
                (self.b2.as_slice_mut(), gb2.insert_axis(Axis(0))),
            ];
            for ((param, grad), adam) in slices.into_iter().zip(opt.iter_mut()) {
                let param = param.expect("parameters are contiguous");
                adam.step(param, grad.as_slice().expect("standard layout"), p.lr);
            }
        }
        progress(1.0);
        Ok(())
    }

    fn predict(&self, x: ArrayView2<f32>) -> Result<Vec<u32>> {
        check_predict("mlp", self.w1.ncols(), &x)?;
        let mut out = Vec::with_capacity(x.nrows());
        for chunk in x.axis_chunks_iter(Axis(0), 1024) {
            out.extend(argmax_rows(&self.logits(chunk).1));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{accuracy, blobs};
    use super::*;

    #[test]
    fn learns_blobs_and_repeats_with_the_seed() {
        let (x, y) = blobs(300, 40, 1);
        let (xt, yt) = blobs(90, 40, 2);
        let set = TrainingSet { x: x.view(), labels: &y, n_classes: 3, genes: &[] };
        let mut m = Mlp::new(MlpParams { hidden: 16, ..Default::default() });
        m.fit(&set, 7).unwrap();
        let p1 = m.predict(xt.view()).unwrap();
        assert!(accuracy(&p1, &yt) > 0.95, "accuracy {}", accuracy(&p1, &yt));
        let w = m.w1.clone();
        m.fit(&set, 7).unwrap();
        assert_eq!(w, m.w1, "same seed, same weights");
        m.fit(&set, 8).unwrap();
        assert_ne!(w, m.w1, "another seed, another initialisation");
    }

    #[test]
    fn progress_rises_to_one() {
        let (x, y) = blobs(60, 5, 1);
        let data = TrainingSet { x: x.view(), labels: &y, n_classes: 3, genes: &[] };
        let mut seen = Vec::new();
        let mut m = Mlp::new(MlpParams { max_steps: 100, ..Default::default() });
        m.fit_reporting(&data, 0, &mut |f| seen.push(f)).unwrap();
        assert_eq!(seen.len(), 20, "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0] < w[1]) && seen[0] > 0.0 && *seen.last().unwrap() == 1.0, "{seen:?}");
        // The same fit as without a listener.
        let mut plain = Mlp::new(MlpParams { max_steps: 100, ..Default::default() });
        plain.fit(&data, 0).unwrap();
        assert_eq!(plain.predict(x.view()).unwrap(), m.predict(x.view()).unwrap());
    }

    #[test]
    fn fits_a_handful_of_cells() {
        // Three cells, one per class: what a distilled set at one cell per class looks like.
        let (x, y) = blobs(3, 40, 4);
        let mut m = Mlp::new(MlpParams::default());
        m.fit(&TrainingSet { x: x.view(), labels: &y, n_classes: 3, genes: &[] }, 0).unwrap();
        assert_eq!(m.predict(x.view()).unwrap(), y);
        assert!(m.final_loss < 0.1, "loss {}", m.final_loss);
    }

    #[test]
    fn step_budget() {
        let p = MlpParams { batch: 100, epochs: 200, max_steps: 600, ..Default::default() };
        assert_eq!(p.steps(3), 200);
        assert_eq!(p.steps(250), 600);
    }

    /// Neither the softmax gradient of a fitted model nor Adam's moments hold subnormal
    /// floats (each costs ~100× in WebAssembly, which cannot flush them to zero).
    #[test]
    fn no_subnormal_floats_once_the_loss_vanishes() {
        let normal_or_zero = |v: f32| v == 0.0 || v.abs() >= f32::MIN_POSITIVE;
        // Margins of 30 to 120 between the right logit and the others.
        let logits = Array2::from_shape_fn((4, 3), |(i, j)| if j == i % 3 { 30.0 * (i + 1) as f32 } else { 0.0 });
        let (g, loss) = softmax_xent_grad(logits, &[0, 1, 2, 0]);
        assert!((0.0..1e-12).contains(&loss), "loss {loss}");
        assert!(g.iter().all(|&v| normal_or_zero(v)), "{g:?}");
        let mut adam = Adam { m: vec![], v: vec![], t: 0 };
        let mut params = vec![0.5f32; 4];
        adam.step(&mut params, &[1e-3, 1e-10, 1e-16, 1e-30], 1e-3);
        for _ in 0..2000 {
            adam.step(&mut params, &[0.0; 4], 1e-3);
            assert!(adam.m.iter().chain(&adam.v).all(|&v| normal_or_zero(v)), "m {:?} v {:?}", adam.m, adam.v);
        }
        // Gradients at or above 1e-14 still count.
        assert!(params[1] < 0.5 && params[2] == 0.5 && params[3] == 0.5);
    }
}
