//! Multinomial logistic regression on gene values, no scaler: scikit-learn's
//! `LogisticRegression(C=1)` objective (L2 on the weights, not the intercepts; the loss averaged
//! over cells as scikit-learn ≥ 1.2 does), minimised with L-BFGS from zero. The problem is
//! convex and the start fixed, so the fit does not depend on the seed.
use super::{argmax_rows, check_predict, softmax_xent_grad, Evaluator, TrainingSet};
use crate::error::{CoreError, Result};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRegParams {
    /// Inverse L2 strength (scikit-learn's `C`): the objective is
    /// `mean cross-entropy + ‖W‖² / (2 C n)`.
    pub c: f64,
    /// L-BFGS iterations at most.
    pub max_iter: usize,
    /// Stop when the largest gradient component is below this.
    pub tol: f64,
}

impl Default for LogRegParams {
    fn default() -> Self {
        LogRegParams { c: 1.0, max_iter: 300, tol: 1e-4 }
    }
}

#[derive(Clone, Debug, Default)]
pub struct LogisticRegression {
    pub params: LogRegParams,
    /// classes × genes
    pub w: Array2<f32>,
    pub b: Array1<f32>,
    /// Iterations the last fit took and its final objective.
    pub iterations: usize,
    pub objective: f64,
}

impl LogisticRegression {
    pub fn new(params: LogRegParams) -> Self {
        LogisticRegression { params, ..Default::default() }
    }

    /// Objective and gradient at θ = [W (row-major), b].
    fn eval(x: ArrayView2<f32>, labels: &[u32], k: usize, lambda: f64, theta: &[f32]) -> (f64, Vec<f32>) {
        let d = x.ncols();
        let w = ArrayView2::from_shape((k, d), &theta[..k * d]).expect("θ holds k × d weights");
        let b = ArrayView2::from_shape((1, k), &theta[k * d..]).expect("θ holds k intercepts");
        let (g, loss) = softmax_xent_grad(x.dot(&w.t()) + b, labels);
        let mut gw = g.t().dot(&x);
        gw.scaled_add(lambda as f32, &w);
        let gb = g.sum_axis(Axis(0));
        let reg = 0.5 * lambda * w.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
        let mut grad: Vec<f32> = gw.iter().copied().collect();
        grad.extend(gb.iter());
        (loss + reg, grad)
    }
}

/// `a·b` in f64, in eight running sums (a fixed order, so deterministic; the compiler
/// vectorises it, where one running sum waits on each addition in turn).
fn dot(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f64; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += x[k] as f64 * y[k] as f64;
        }
    }
    let tail: f64 = a[n / 8 * 8..].iter().zip(&b[n / 8 * 8..]).map(|(&x, &y)| x as f64 * y as f64).sum();
    acc.iter().sum::<f64>() + tail
}

/// What [`lbfgs`] found.
pub struct LbfgsResult {
    pub theta: Vec<f32>,
    pub objective: f64,
    pub iterations: usize,
}

/// Minimises a smooth function with L-BFGS (memory 10, Armijo backtracking from step 1) from
/// `theta`. `eval` returns the objective and its gradient. Stops when the largest gradient
/// component is at most `tol`, when an iteration changes the objective by less than 1e-10
/// relative, when no step decreases it, or after `max_iter` iterations. Deterministic.
pub fn lbfgs(theta: Vec<f32>, mut eval: impl FnMut(&[f32]) -> (f64, Vec<f32>), max_iter: usize, tol: f64) -> LbfgsResult {
    let (f, g) = eval(&theta);
    let mut state = Lbfgs::new(theta, f, g, max_iter, tol);
    while let Some(trial) = state.trial() {
        let (ft, gt) = eval(trial);
        state.report(ft, gt);
    }
    state.result()
}

/// Where an [`Lbfgs`] minimisation is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// At an accepted point; the next call to `trial` starts an iteration.
    Iterate,
    /// Backtracking along the current direction: the step tried and how many were refused.
    Search { step: f32, tries: usize },
    Finished,
}

/// One L-BFGS minimisation driven from outside, one function evaluation at a time, so that
/// several problems can share each pass over the data (one-vs-rest fits evaluate every class
/// still running together, each with its own line search and stop). [`lbfgs`] drives one.
pub struct Lbfgs {
    theta: Vec<f32>,
    f: f64,
    g: Vec<f32>,
    max_iter: usize,
    tol: f64,
    /// Memory of (s, y, 1/yᵀs), oldest first.
    hist: VecDeque<(Vec<f32>, Vec<f32>, f64)>,
    dir: Vec<f32>,
    slope: f64,
    trial: Vec<f32>,
    phase: Phase,
    iterations: usize,
}

impl Lbfgs {
    /// Starts from `theta` with its objective `f` and gradient `g`.
    pub fn new(theta: Vec<f32>, f: f64, g: Vec<f32>, max_iter: usize, tol: f64) -> Self {
        let trial = vec![0f32; theta.len()];
        Lbfgs { theta, f, g, max_iter, tol, hist: VecDeque::new(), dir: Vec::new(), slope: 0.0, trial, phase: Phase::Iterate, iterations: 0 }
    }

    /// The next point to evaluate, or `None` when finished.
    pub fn trial(&mut self) -> Option<&[f32]> {
        if self.phase == Phase::Iterate {
            let gmax = self.g.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
            if self.iterations >= self.max_iter || gmax <= self.tol || !self.f.is_finite() {
                self.phase = Phase::Finished;
                return None;
            }
            self.iterations += 1;
            self.direction();
            self.phase = Phase::Search { step: 1.0, tries: 0 };
        }
        let Phase::Search { step, .. } = self.phase else { return None };
        for ((t, th), d) in self.trial.iter_mut().zip(&self.theta).zip(&self.dir) {
            *t = th + step * d;
        }
        Some(&self.trial)
    }

    /// The objective and gradient at the point [`trial`](Self::trial) returned last.
    pub fn report(&mut self, ft: f64, gt: Vec<f32>) {
        let Phase::Search { step, tries } = self.phase else { return };
        if !(ft.is_finite() && ft <= self.f + 1e-4 * step as f64 * self.slope) {
            // Armijo refused: halve the step, give up after 40 (no step decreases f).
            self.phase = if tries + 1 >= 40 { Phase::Finished } else { Phase::Search { step: step * 0.5, tries: tries + 1 } };
            return;
        }
        let s: Vec<f32> = self.trial.iter().zip(&self.theta).map(|(a, b)| a - b).collect();
        let y: Vec<f32> = gt.iter().zip(&self.g).map(|(a, b)| a - b).collect();
        let ys = dot(&y, &s);
        if ys > 1e-12 {
            if self.hist.len() == 10 {
                self.hist.pop_front();
            }
            self.hist.push_back((s, y, 1.0 / ys));
        }
        let stalled = (self.f - ft).abs() <= 1e-10 * self.f.abs().max(1.0);
        std::mem::swap(&mut self.theta, &mut self.trial);
        self.f = ft;
        self.g = gt;
        self.phase = if stalled { Phase::Finished } else { Phase::Iterate };
    }

    /// Two-loop recursion: the direction −H g, or −g when that is not a descent direction.
    fn direction(&mut self) {
        let mut q = self.g.clone();
        let mut alphas = Vec::with_capacity(self.hist.len());
        for (s, y, rho) in self.hist.iter().rev() {
            let a = rho * dot(s, &q);
            for (qi, yi) in q.iter_mut().zip(y) {
                *qi -= (a as f32) * yi;
            }
            alphas.push(a);
        }
        let gamma = match self.hist.back() {
            Some((s, y, _)) => dot(s, y) / dot(y, y).max(1e-30),
            None => 1.0 / self.g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt().max(1.0),
        };
        for v in q.iter_mut() {
            *v *= gamma as f32;
        }
        for ((s, y, rho), a) in self.hist.iter().zip(alphas.iter().rev()) {
            let bcoef = rho * dot(y, &q);
            for (qi, si) in q.iter_mut().zip(s) {
                *qi += ((a - bcoef) as f32) * si;
            }
        }
        self.dir = q.iter().map(|v| -v).collect();
        self.slope = dot(&self.g, &self.dir);
        if self.slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart along −g.
            self.hist.clear();
            self.dir = self.g.iter().map(|v| -v).collect();
            self.slope = dot(&self.g, &self.dir);
        }
    }

    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// The best point so far.
    pub fn result(self) -> LbfgsResult {
        LbfgsResult { theta: self.theta, objective: self.f, iterations: self.iterations }
    }
}

impl Evaluator for LogisticRegression {
    fn name(&self) -> String {
        "lr".into()
    }

    fn fit(&mut self, data: &TrainingSet, _seed: u64) -> Result<()> {
        data.check()?;
        let (n, d, k) = (data.x.nrows(), data.x.ncols(), data.n_classes);
        let p = &self.params;
        if !(p.c > 0.0 && p.c.is_finite()) {
            return Err(CoreError::data("lr", format!("C = {} (must be positive)", p.c)));
        }
        let lambda = 1.0 / (p.c * n as f64);
        let x = data.x;
        let fit = lbfgs(vec![0f32; k * d + k], |theta| Self::eval(x, data.labels, k, lambda, theta), p.max_iter, p.tol);
        let (theta, f, iterations) = (fit.theta, fit.objective, fit.iterations);
        if !f.is_finite() {
            return Err(CoreError::data("lr", "the objective became non-finite".to_string()));
        }
        self.w = Array2::from_shape_vec((k, d), theta[..k * d].to_vec()).expect("k × d");
        self.b = Array1::from(theta[k * d..].to_vec());
        self.iterations = iterations;
        self.objective = f;
        Ok(())
    }

    fn predict(&self, x: ArrayView2<f32>) -> Result<Vec<u32>> {
        check_predict("lr", self.w.ncols(), &x)?;
        Ok(argmax_rows(&(x.dot(&self.w.t()) + &self.b)))
    }

    fn seed_independent(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{accuracy, blobs};
    use super::*;

    #[test]
    fn separates_blobs_and_reaches_a_stationary_point() {
        let (x, y) = blobs(120, 30, 1);
        let mut lr = LogisticRegression::new(LogRegParams::default());
        lr.fit(&TrainingSet { x: x.view(), labels: &y, n_classes: 3, genes: &[] }, 0).unwrap();
        let (xt, yt) = blobs(90, 30, 2);
        assert!(accuracy(&lr.predict(xt.view()).unwrap(), &yt) > 0.95);
        // At the optimum the gradient vanishes: check it independently of the solver's stop.
        let mut theta = lr.w.iter().cloned().collect::<Vec<_>>();
        theta.extend(lr.b.iter());
        let (_, g) = LogisticRegression::eval(x.view(), &y, 3, 1.0 / 120.0, &theta);
        let gmax = g.iter().fold(0f32, |a, v| a.max(v.abs()));
        assert!(gmax < 1e-3, "gradient {gmax}");
        // Stronger regularisation shrinks the weights.
        let mut strong = LogisticRegression::new(LogRegParams { c: 0.01, ..Default::default() });
        strong.fit(&TrainingSet { x: x.view(), labels: &y, n_classes: 3, genes: &[] }, 0).unwrap();
        let norm = |w: &Array2<f32>| w.iter().map(|v| v * v).sum::<f32>();
        assert!(norm(&strong.w) < 0.5 * norm(&lr.w));
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (x, y) = blobs(12, 5, 3);
        let theta: Vec<f32> = (0..3 * 5 + 3).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.05).collect();
        let (_, g) = LogisticRegression::eval(x.view(), &y, 3, 0.1, &theta);
        for i in [0, 4, 9, 15, 17] {
            let h = 1e-2;
            let mut tp = theta.clone();
            tp[i] += h;
            let mut tm = theta.clone();
            tm[i] -= h;
            let fd = (LogisticRegression::eval(x.view(), &y, 3, 0.1, &tp).0 - LogisticRegression::eval(x.view(), &y, 3, 0.1, &tm).0)
                / (2.0 * h as f64);
            assert!((fd - g[i] as f64).abs() < 2e-3, "θ[{i}]: finite difference {fd} vs gradient {}", g[i]);
        }
    }

    #[test]
    fn bad_input_is_refused() {
        let (x, y) = blobs(6, 4, 1);
        let mut lr = LogisticRegression::new(LogRegParams::default());
        assert!(lr.predict(x.view()).is_err());
        assert!(lr.fit(&TrainingSet { x: x.view(), labels: &y[..5], n_classes: 3, genes: &[] }, 0).is_err());
        assert!(lr.fit(&TrainingSet { x: x.view(), labels: &y, n_classes: 2, genes: &[] }, 0).is_err());
    }
}
