//! The paper's default evaluator: the frozen foundation encoder and one softmax head (SGD).
use super::{argmax_rows, Evaluator, TrainingSet};
use crate::error::{CoreError, Result};
use crate::reference::CpuModel;
use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// SGD settings of a softmax linear head.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdParams {
    /// Optimisation steps (the same budget whatever the training-set size).
    pub steps: usize,
    /// Mini-batch size; sets smaller than this are used whole.
    pub batch: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

impl Default for SgdParams {
    fn default() -> Self {
        SgdParams { steps: 1000, batch: 256, lr: 0.5, momentum: 0.9, weight_decay: 5e-4 }
    }
}

/// A softmax-regression head `p = softmax(W f/s + b)` trained with SGD + momentum on
/// cross-entropy, where `s` is the mean L2 norm of the training features: the step size then
/// means the same whatever the encoder's output scale. Deterministic for a given seed.
#[derive(Clone, Debug)]
pub struct LinearHead {
    pub w: Array2<f32>,
    pub b: Array1<f32>,
    /// Feature scale `s` (mean row norm of the training features).
    pub scale: f32,
}

impl LinearHead {
    /// Trains on `features` (rows) with labels; weights start at small seeded random values.
    pub fn train(features: ArrayView2<f32>, labels: &[u32], n_classes: usize, p: &SgdParams, seed: u64) -> Result<Self> {
        let (n, d) = features.dim();
        if n == 0 || n != labels.len() {
            return Err(CoreError::data("training set", format!("{n} rows for {} labels", labels.len())));
        }
        let norms: f32 = features.rows().into_iter().map(|r| r.dot(&r).sqrt()).sum::<f32>() / n as f32;
        let scale = if norms > 0.0 && norms.is_finite() { norms } else { 1.0 };
        let features = features.mapv(|v| v / scale);
        let features = features.view();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // PyTorch's default Linear init: U(−1/√d, 1/√d).
        let bound = 1.0 / (d as f32).sqrt();
        let mut w = Array2::from_shape_fn((n_classes, d), |_| rng.gen_range(-bound..bound));
        let mut b = Array1::from_shape_fn(n_classes, |_| rng.gen_range(-bound..bound));
        let (mut vw, mut vb) = (Array2::<f32>::zeros((n_classes, d)), Array1::<f32>::zeros(n_classes));
        let mut order: Vec<usize> = (0..n).collect();
        let mut pos = n;
        let batch = p.batch.min(n).max(1);
        for _ in 0..p.steps {
            let idx: Vec<usize> = if batch == n {
                order.clone()
            } else {
                if pos + batch > n {
                    // reshuffle each epoch (Fisher–Yates with the seeded RNG)
                    for i in (1..n).rev() {
                        order.swap(i, rng.gen_range(0..=i));
                    }
                    pos = 0;
                }
                pos += batch;
                order[pos - batch..pos].to_vec()
            };
            let f = features.select(Axis(0), &idx);
            let mut g = crate::reference::softmax_rows(f.dot(&w.t()) + &b);
            for (mut row, &i) in g.rows_mut().into_iter().zip(&idx) {
                row[labels[i] as usize] -= 1.0;
            }
            g /= idx.len() as f32;
            let gw = g.t().dot(&f) + &(&w * p.weight_decay);
            let gb = g.sum_axis(Axis(0));
            vw = &vw * p.momentum + &gw;
            vb = &vb * p.momentum + &gb;
            w.scaled_add(-p.lr, &vw);
            b.scaled_add(-p.lr, &vb);
        }
        Ok(LinearHead { w, b, scale })
    }

    pub fn predict(&self, features: ArrayView2<f32>) -> Vec<u32> {
        argmax_rows(&(features.dot(&self.w.t()) / self.scale + &self.b))
    }
}

/// The paper's default evaluator: frozen foundation encoder + one linear head (SGD).
pub struct FoundationLinearProbe<'m> {
    pub model: &'m CpuModel,
    pub sgd: SgdParams,
    head: Option<LinearHead>,
}

impl<'m> FoundationLinearProbe<'m> {
    pub fn new(model: &'m CpuModel, sgd: SgdParams) -> Result<Self> {
        if model.spec.encoder.is_none() {
            return Err(CoreError::Mismatch(
                "the default evaluator needs the foundation encoder; this bundle has none".into(),
            ));
        }
        Ok(FoundationLinearProbe { model, sgd, head: None })
    }

    /// Encoder features of `x`, computed in chunks to bound memory.
    pub fn features(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        let mut parts = Vec::new();
        for chunk in x.axis_chunks_iter(Axis(0), 512) {
            parts.push(self.model.encode(chunk.to_owned())?);
        }
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        ndarray::concatenate(Axis(0), &views).map_err(|e| CoreError::data("features", e.to_string()))
    }

    /// Fits the head on precomputed features (lets callers encode once for many repeats).
    pub fn fit_features(&mut self, features: ArrayView2<f32>, labels: &[u32], n_classes: usize, seed: u64) -> Result<()> {
        self.head = Some(LinearHead::train(features, labels, n_classes, &self.sgd, seed)?);
        Ok(())
    }

    pub fn predict_features(&self, features: ArrayView2<f32>) -> Result<Vec<u32>> {
        let h = self.head.as_ref().ok_or_else(|| CoreError::Mismatch("evaluator used before fit".into()))?;
        Ok(h.predict(features))
    }
}

impl Evaluator for FoundationLinearProbe<'_> {
    fn name(&self) -> String {
        "default".into()
    }
    fn fit(&mut self, data: &TrainingSet, seed: u64) -> Result<()> {
        let f = self.features(data.x)?;
        self.fit_features(f.view(), data.labels, data.n_classes, seed)
    }
    fn predict(&self, x: ArrayView2<f32>) -> Result<Vec<u32>> {
        let f = self.features(x)?;
        self.predict_features(f.view())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_head_separates_blobs_deterministically() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 90;
        let labels: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
        let x = Array2::from_shape_fn((n, 4), |(i, j)| {
            let c = labels[i] as usize;
            (if j == c { 2.0 } else { 0.0 }) + rng.gen_range(-0.3..0.3)
        });
        let p = SgdParams { steps: 200, batch: 32, ..Default::default() };
        let h = LinearHead::train(x.view(), &labels, 3, &p, 5).unwrap();
        let pred = h.predict(x.view());
        let acc = pred.iter().zip(&labels).filter(|(a, b)| a == b).count() as f64 / n as f64;
        assert!(acc > 0.95, "accuracy {acc}");
        let h2 = LinearHead::train(x.view(), &labels, 3, &p, 5).unwrap();
        assert_eq!(h.w, h2.w);
    }
}
