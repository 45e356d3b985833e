//! Evaluators: models trained on a (synthetic) set and tested on real cells.
//!
//! An evaluator is a small trait over a dense f32 matrix (log-normalised expression, cells ×
//! genes in a stated gene order) and class ids, with `fit` and `predict`. Built in:
//!
//! * [`FoundationLinearProbe`] (`default`) — the paper's: the frozen foundation encoder
//!   followed by one linear softmax head trained with SGD. It reads cells through the very
//!   features that DM and DC optimise, so it flatters latent-space distillation;
//! * [`LogisticRegression`] (`lr`) — multinomial L2 logistic regression on the log-normalised
//!   genes, no scaler (scikit-learn's `LogisticRegression()` objective, L-BFGS);
//! * [`Mlp`] (`mlp`) — one hidden ReLU layer on the log-normalised genes (scikit-learn's
//!   `MLPClassifier` recipe: Glorot init, Adam, mini-batches, L2).
//!
//! The gene-space pair is the yardstick a recipient would use: classifiers that never see the
//! distillation encoder. Plugins (CellTypist-style, CNN, transformer) implement the same calls
//! across a C ABI.
mod logreg;
mod mlp;
mod probe;

pub use logreg::{lbfgs, Lbfgs, LbfgsResult, LogisticRegression, LogRegParams};
pub use mlp::{Mlp, MlpParams};
pub use probe::{FoundationLinearProbe, LinearHead, SgdParams};

use crate::error::{CoreError, Result};
use ndarray::{Array2, ArrayView2};

/// What an evaluator trains on.
pub struct TrainingSet<'a> {
    /// Log-normalised expression, cells × genes (in `genes` order).
    pub x: ArrayView2<'a, f32>,
    pub labels: &'a [u32],
    pub n_classes: usize,
    pub genes: &'a [String],
}

impl TrainingSet<'_> {
    /// Rows and labels agree, labels are in range, the set is not empty.
    pub fn check(&self) -> Result<()> {
        let n = self.x.nrows();
        if n == 0 || n != self.labels.len() {
            return Err(CoreError::data("training set", format!("{n} rows for {} labels", self.labels.len())));
        }
        if let Some(&c) = self.labels.iter().find(|&&c| c as usize >= self.n_classes) {
            return Err(CoreError::data("training set", format!("label {c} but {} classes", self.n_classes)));
        }
        if !self.genes.is_empty() && self.genes.len() != self.x.ncols() {
            return Err(CoreError::data("training set", format!("{} columns for {} genes", self.x.ncols(), self.genes.len())));
        }
        Ok(())
    }
}

pub trait Evaluator {
    fn name(&self) -> String;
    /// Trains from scratch (any previous fit is discarded); `seed` picks the initialisation.
    fn fit(&mut self, data: &TrainingSet, seed: u64) -> Result<()>;
    /// [`Evaluator::fit`], calling `progress` with the fraction done (0–1) as it goes (at the
    /// end only, for evaluators that cannot say sooner).
    fn fit_reporting(&mut self, data: &TrainingSet, seed: u64, progress: &mut dyn FnMut(f64)) -> Result<()> {
        self.fit(data, seed)?;
        progress(1.0);
        Ok(())
    }
    /// Class id per row of `x` (same gene order as in `fit`).
    fn predict(&self, x: ArrayView2<f32>) -> Result<Vec<u32>>;
    /// True when the fit does not depend on the seed (a convex problem solved from a fixed
    /// start): repeating it over seeds would only repeat the same number.
    fn seed_independent(&self) -> bool {
        false
    }
}

/// Refuses `predict` before `fit` (no fitted genes) or on another number of genes.
pub(crate) fn check_predict(name: &str, fitted_genes: usize, x: &ArrayView2<f32>) -> Result<()> {
    if fitted_genes == 0 {
        return Err(CoreError::Mismatch(format!("evaluator {name} used before fit")));
    }
    if x.ncols() != fitted_genes {
        return Err(CoreError::data(name, format!("{} genes, fitted on {fitted_genes}", x.ncols())));
    }
    Ok(())
}

/// Index of the largest value of each row (the first on ties).
pub fn argmax_rows(x: &Array2<f32>) -> Vec<u32> {
    x.rows()
        .into_iter()
        .map(|r| r.iter().enumerate().fold((0, f32::NEG_INFINITY), |a, (i, &v)| if v > a.1 { (i, v) } else { a }).0 as u32)
        .collect()
}

/// Softmax of each row minus the one-hot label, divided by the number of rows: the gradient of
/// the mean cross-entropy with respect to the logits. Returns it with the mean loss.
pub(crate) fn softmax_xent_grad(logits: Array2<f32>, labels: &[u32]) -> (Array2<f32>, f64) {
    let n = logits.nrows().max(1) as f32;
    let mut g = logits;
    let mut loss = 0.0f64;
    for (mut row, &y) in g.rows_mut().into_iter().zip(labels) {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let zy = row[y as usize] - m;
        row.mapv_inplace(|v| flushed_exp(v - m));
        // s ≥ 1 (the largest logit contributes e⁰); the loss in log space needs no tiny logarithm.
        let s: f32 = row.sum();
        loss += (s.ln() - zy) as f64;
        row.mapv_inplace(|v| v / s);
        row[y as usize] -= 1.0;
        row.mapv_inplace(|v| v / n);
    }
    (g, loss / n as f64)
}

/// `e^t` for `t ≤ 0`, or 0 once it is below 1e-20 (`t < −46`).
///
/// Once a classifier fits its training cells, the probabilities of the wrong classes and the
/// gradients built from them keep shrinking and end as subnormal floats. WebAssembly has no
/// flush-to-zero mode, and there each operation on a subnormal costs about a hundred times
/// more: the browser's MLP on 1 000 cells × 14 000 genes went from 0.1 to 0.8 s a step once its
/// loss reached 0 (476 s for its 600 steps). A probability under 1e-20 changes nothing an f32
/// step can show, so it is 0 from the start.
#[inline]
pub(crate) fn flushed_exp(t: f32) -> f32 {
    if t < -46.0 {
        0.0
    } else {
        t.exp()
    }
}

#[cfg(test)]
pub(crate) mod testdata {
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Three classes, each marked by a few high genes over noise (log-normalised-like values).
    pub fn blobs(n: usize, d: usize, seed: u64) -> (Array2<f32>, Vec<u32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let labels: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
        let x = Array2::from_shape_fn((n, d), |(i, j)| {
            let c = labels[i] as usize;
            let signal = if j % 3 == c && j < 12 { 2.0 } else { 0.0 };
            (signal + rng.gen_range(-0.6f32..0.6)).max(0.0)
        });
        (x, labels)
    }

    pub fn accuracy(pred: &[u32], labels: &[u32]) -> f64 {
        pred.iter().zip(labels).filter(|(a, b)| a == b).count() as f64 / labels.len() as f64
    }
}
