//! CellTypist's training recipe as an scdd evaluator plugin (`celltypist`), so that its number
//! means what CellTypist users expect (celltypist 1.7 `train` and `annotate`):
//!
//! 1. genes with no expression in the training cells are dropped;
//! 2. each gene is z-scaled with the training cells' mean and standard deviation (population,
//!    as scikit-learn's `StandardScaler`; a constant gene keeps scale 1), values above 10 are
//!    set to 10 (CellTypist clips the top only);
//! 3. one-vs-rest L2 logistic regression, `C = 1`: each class against the rest, minimising
//!    `C·Σ log(1 + e^{−s·(w·x + b)}) + ½‖w‖²` (intercept not penalised) with L-BFGS from zero —
//!    scikit-learn's `LogisticRegression(multi_class="ovr")`, which CellTypist uses below 50 000
//!    cells — or, with `use_sgd`, stochastic gradient descent on the log loss with penalty
//!    `α/2‖w‖²` and scikit-learn's "optimal" step `1/(α(t₀ + t))` (CellTypist's `use_SGD`;
//!    with `mini_batch`, `epochs` rounds of `batch_number` batches of `batch_size` cells, each
//!    batch one pass, optionally drawn with class-balanced weights);
//! 4. optionally feature selection: the `top_genes` genes of largest |coefficient| per class
//!    (from an SGD fit, as CellTypist), their union kept, and the classifier trained again;
//! 5. prediction: the same scaling and clip, the class of the largest decision value, and
//!    probabilities `σ(decision)` normalised over classes (scikit-learn's OvR `predict_proba`).
//!
//! Known behaviour kept on purpose: on a handful of smooth synthetic cells the training set's
//! own scaler can blow up genes that barely vary, and the predictions can collapse onto one
//! class. The host flags a collapsed fit in its results; this plugin does not hide it.
use ndarray::{Array1, Array2, ArrayView2};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scdd_plugin_api::{export_plugin, Evaluator, FitData, PredictData, SCDD_NEEDS_LOG_NORMALISED};
use ovr::{sigmoid, Design, Scan};
use serde::Deserialize;

mod kernels;
pub mod ovr;

/// The plugin's JSON config; every field optional (CellTypist's defaults).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Inverse L2 strength of the L-BFGS logistic regression.
    pub c: f64,
    /// L-BFGS iterations, or SGD epochs; default as CellTypist: 1000 below 50 000 cells, 500
    /// below 500 000, else 200.
    pub max_iter: Option<usize>,
    /// L-BFGS: stop when the largest gradient component (of the per-cell mean objective) is below this.
    pub tol: f64,
    /// Centre genes before scaling (CellTypist's `with_mean`).
    pub with_mean: bool,
    /// Stochastic gradient descent instead of L-BFGS.
    pub use_sgd: bool,
    /// SGD in mini-batches (large data).
    pub mini_batch: bool,
    /// SGD L2 strength.
    pub alpha: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub batch_number: usize,
    /// Mini-batches drawn with weights inversely proportional to class size.
    pub balance_cell_type: bool,
    pub feature_selection: bool,
    pub top_genes: usize,
    /// Threads sharing each pass over the cells (0: as many as the machine has). The fit
    /// depends on it only through the order of floating-point sums.
    pub threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            c: 1.0,
            max_iter: None,
            tol: 1e-4,
            with_mean: true,
            use_sgd: false,
            mini_batch: false,
            alpha: 1e-4,
            epochs: 10,
            batch_size: 1000,
            batch_number: 100,
            balance_cell_type: false,
            feature_selection: false,
            top_genes: 300,
            threads: 0,
        }
    }
}

impl Config {
    /// Parses and range-checks a config; the error names the field and value.
    pub fn parse(json: &str) -> Result<Config, String> {
        let c: Config = serde_json::from_str(if json.trim().is_empty() { "{}" } else { json }).map_err(|e| format!("config: {e}"))?;
        let bad = |field: &str, v: String, need: &str| Err(format!("config {field} = {v}: {need}"));
        if !(c.c > 0.0 && c.c.is_finite()) {
            return bad("c", c.c.to_string(), "must be positive");
        }
        if !(c.tol > 0.0 && c.tol.is_finite()) {
            return bad("tol", c.tol.to_string(), "must be positive");
        }
        if !(c.alpha > 0.0 && c.alpha.is_finite()) {
            return bad("alpha", c.alpha.to_string(), "must be positive");
        }
        for (field, v, max) in [
            ("epochs", c.epochs, 100_000),
            ("batch_size", c.batch_size, 10_000_000),
            ("batch_number", c.batch_number, 10_000_000),
            ("top_genes", c.top_genes, 10_000_000),
            ("max_iter", c.max_iter.unwrap_or(1), 1_000_000),
            ("threads", c.threads.max(1), 1024),
        ] {
            if !(1..=max).contains(&v) {
                return bad(field, v.to_string(), &format!("must be between 1 and {max}"));
            }
        }
        Ok(c)
    }

    fn iterations(&self, n: usize) -> usize {
        self.max_iter.unwrap_or(if n < 50_000 {
            1000
        } else if n < 500_000 {
            500
        } else {
            200
        })
    }
}

/// A fitted (or not yet fitted) CellTypist-style model.
pub struct CellTypist {
    config: Config,
    seed: u64,
    n_genes_in: usize,
    /// Input columns the model reads, in order.
    genes: Vec<usize>,
    mean: Array1<f32>,
    scale: Array1<f32>,
    /// classes × genes.
    w: Array2<f32>,
    b: Array1<f32>,
}

/// scikit-learn's `SGDClassifier(loss="log_loss", penalty="l2", learning_rate="optimal")`,
/// one-vs-rest, per-cell updates over `order` (a list of passes, each a list of cells).
fn fit_sgd(z: &Array2<f32>, labels: &[u32], k: usize, alpha: f64, passes: &[Vec<usize>]) -> (Array2<f32>, Array1<f32>) {
    let d = z.ncols();
    let mut w = Array2::<f64>::zeros((k, d));
    let mut b = Array1::<f64>::zeros(k);
    // "optimal" schedule: η_t = 1/(α(t₀ + t)), t₀ from scikit-learn's heuristic for the log loss.
    let typw = (1.0 / alpha.sqrt()).sqrt();
    let dloss0 = sigmoid(typw); // |d loss/d z| at z = −typw for a positive cell
    let eta0 = typw / dloss0.max(1.0);
    let t0 = 1.0 / (eta0 * alpha);
    let mut t = 1.0f64;
    // w is stored as scale · w̃ so that the L2 shrinkage is O(1) per step.
    let mut wscale = vec![1.0f64; k];
    for pass in passes {
        for &i in pass {
            let eta = 1.0 / (alpha * (t0 + t - 1.0));
            let x = z.row(i);
            for j in 0..k {
                let wj = w.row(j);
                let dotp: f64 = wj.iter().zip(x.iter()).map(|(a, &v)| a * v as f64).sum::<f64>() * wscale[j] + b[j];
                let y = if labels[i] as usize == j { 1.0 } else { 0.0 };
                let g = sigmoid(dotp) - y; // d loss / d z
                wscale[j] *= (1.0 - eta * alpha).max(1e-9);
                let step = eta * g / wscale[j];
                let mut wj = w.row_mut(j);
                for (a, &v) in wj.iter_mut().zip(x.iter()) {
                    *a -= step * v as f64;
                }
                b[j] -= eta * g;
                if wscale[j] < 1e-6 {
                    wj.mapv_inplace(|v| v * wscale[j]);
                    wscale[j] = 1.0;
                }
            }
            t += 1.0;
        }
    }
    for (j, mut row) in w.rows_mut().into_iter().enumerate() {
        row.mapv_inplace(|v| v * wscale[j]);
    }
    (w.mapv(|v| v as f32), b.mapv(|v| v as f32))
}

impl CellTypist {
    /// The order in which SGD visits cells: `max_iter` shuffled passes over all cells, or
    /// CellTypist's mini-batch epochs.
    fn sgd_passes(&self, labels: &[u32], k: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
        let n = labels.len();
        let cfg = &self.config;
        if !cfg.mini_batch {
            // scikit-learn stops earlier when the loss stalls; a fixed, small number of epochs
            // keeps the fit deterministic and bounded (its default tolerance stops within ~10–30).
            let epochs = cfg.iterations(n).min(30);
            return (0..epochs)
                .map(|_| {
                    let mut p: Vec<usize> = (0..n).collect();
                    p.shuffle(rng);
                    p
                })
                .collect();
        }
        let mut counts = vec![0usize; k];
        for &y in labels {
            counts[y as usize] += 1;
        }
        let per_epoch = (cfg.batch_size * cfg.batch_number).min(n);
        let mut passes = Vec::new();
        for _ in 0..cfg.epochs {
            // Draw the epoch's cells without replacement, class-balanced when asked
            // (Efraimidis–Spirakis keys u^{1/w}).
            let mut keyed: Vec<(f64, usize)> = (0..n)
                .map(|i| {
                    let wgt = if cfg.balance_cell_type { 1.0 / counts[labels[i] as usize] as f64 } else { 1.0 };
                    (rng.gen::<f64>().powf(1.0 / wgt), i)
                })
                .collect();
            keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
            let chosen: Vec<usize> = keyed.into_iter().take(per_epoch).map(|(_, i)| i).collect();
            for batch in chosen.chunks(cfg.batch_size) {
                passes.push(batch.to_vec());
            }
        }
        passes
    }

    fn classifier(&self, z: &Design, labels: &[u32], k: usize, sgd: bool, rng: &mut ChaCha8Rng) -> (Array2<f32>, Array1<f32>) {
        if sgd {
            let passes = self.sgd_passes(labels, k, rng);
            fit_sgd(&z.to_dense(), labels, k, self.config.alpha, &passes)
        } else {
            let fit = ovr::fit(z, labels, k, self.config.c, self.config.iterations(labels.len()), self.config.tol, self.threads());
            (fit.w, fit.b)
        }
    }

    /// Worker threads for a fit: the configured number, or one per core.
    fn threads(&self) -> usize {
        match self.config.threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            t => t,
        }
    }

    /// Decision values of the rows of `x` (all input genes): cells × classes.
    fn decision(&self, x: ArrayView2<f32>) -> Array2<f32> {
        Design::new(x, &self.genes, &self.mean, &self.scale).times_weights(self.w.view(), 1) + &self.b
    }
}

impl Evaluator for CellTypist {
    fn create(config_json: &str, seed: u64) -> Result<Self, String> {
        Ok(CellTypist {
            config: Config::parse(config_json)?,
            seed,
            n_genes_in: 0,
            genes: Vec::new(),
            mean: Array1::zeros(0),
            scale: Array1::zeros(0),
            w: Array2::zeros((0, 0)),
            b: Array1::zeros(0),
        })
    }

    fn fit(&mut self, data: &FitData<'_>) -> Result<(), String> {
        let (n, g) = (data.x.n_cells, data.x.n_genes);
        let k = data.class_names.len();
        let x = ArrayView2::from_shape((n, g), data.x.data).map_err(|e| e.to_string())?;
        // The fit shares each pass over the cells among its own threads. A matrix product that
        // threads as well (matrixmultiply's `threading` feature, on whenever the plugin is built
        // together with `scdd`, which enables it) oversubscribes the cores: on 2 cores pancreas'
        // fit took 0.21 s instead of 0.15. Unless the user chose otherwise, products run on one
        // thread each (the variable is read at the first product; the plugin runs in a worker
        // process of its own).
        if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
            std::env::set_var("MATMUL_NUM_THREADS", "1");
        }
        // 1. Genes expressed somewhere in the training cells; 2. the scaler fit on them (f64
        // accumulation; count-like data are read once, their non-zero values kept).
        let scan = Scan::new(x);
        let sums = &scan.sums;
        // A non-finite input leaves its gene's sum non-finite.
        if sums.iter().any(|s| !s.is_finite()) {
            let v = x.iter().find(|v| !v.is_finite()).copied().unwrap_or(f32::NAN);
            return Err(format!("the training cells hold a non-finite value ({v})"));
        }
        let mut genes: Vec<usize> = (0..g).filter(|&j| sums[j] != 0.0).collect();
        if genes.is_empty() {
            return Err("no gene is expressed in the training cells".into());
        }
        let means: Vec<f64> = sums.iter().map(|s| s / n as f64).collect();
        let variances = scan.variances(x, &genes, &means);
        let mut mean: Array1<f32> = genes.iter().map(|&c| if self.config.with_mean { means[c] as f32 } else { 0.0 }).collect();
        let mut scale: Array1<f32> = variances.iter().map(|&var| if var > 0.0 { var.sqrt() as f32 } else { 1.0 }).collect();
        let mut z = scan.design(x, &genes, &mean, &scale);
        drop(scan);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        // 3. Classifier (CellTypist's first round is SGD when selecting features).
        let (mut w, mut b) = self.classifier(&z, data.labels, k, self.config.use_sgd || self.config.feature_selection, &mut rng);
        // 4. Feature selection and the second round.
        if self.config.feature_selection {
            let top = self.config.top_genes;
            if genes.len() <= top {
                return Err(format!("feature selection: {} expressed genes, not more than top_genes = {top}", genes.len()));
            }
            let mut keep: Vec<usize> = Vec::new();
            for row in w.rows() {
                let mut idx: Vec<usize> = (0..row.len()).collect();
                idx.sort_by(|&a, &b| row[b].abs().total_cmp(&row[a].abs()).then(a.cmp(&b)));
                keep.extend_from_slice(&idx[..top]);
            }
            keep.sort_unstable();
            keep.dedup();
            z = z.select(&keep);
            genes = keep.iter().map(|&j| genes[j]).collect();
            mean = keep.iter().map(|&j| mean[j]).collect();
            scale = keep.iter().map(|&j| scale[j]).collect();
            (w, b) = self.classifier(&z, data.labels, k, self.config.use_sgd, &mut rng);
        }
        if w.iter().chain(b.iter()).any(|v| !v.is_finite()) {
            return Err("the fit diverged (non-finite coefficients)".into());
        }
        (self.n_genes_in, self.genes, self.mean, self.scale, self.w, self.b) = (g, genes, mean, scale, w, b);
        Ok(())
    }

    fn predict(&mut self, data: &PredictData<'_>, labels: &mut [u32], probs: &mut [f32]) -> Result<(), String> {
        if self.w.is_empty() {
            return Err("predict before fit".into());
        }
        if data.x.n_genes != self.n_genes_in {
            return Err(format!("{} genes, fitted on {}", data.x.n_genes, self.n_genes_in));
        }
        let x = ArrayView2::from_shape((data.x.n_cells, data.x.n_genes), data.x.data).map_err(|e| e.to_string())?;
        let dec = self.decision(x);
        let k = self.w.nrows();
        for (i, row) in dec.rows().into_iter().enumerate() {
            let best = row.iter().enumerate().fold((0, f32::NEG_INFINITY), |a, (j, &v)| if v > a.1 { (j, v) } else { a }).0;
            labels[i] = best as u32;
            let p: Vec<f64> = row.iter().map(|&v| sigmoid(v as f64)).collect();
            let s: f64 = p.iter().sum();
            for (j, pj) in p.iter().enumerate() {
                probs[i * k + j] = if s > 0.0 { (pj / s) as f32 } else { 1.0 / k as f32 };
            }
        }
        Ok(())
    }
}

export_plugin!(CellTypist, name: "celltypist", version: "0.1.0", needs: SCDD_NEEDS_LOG_NORMALISED, resources: "");

#[cfg(test)]
mod tests {
    use super::*;
    use scdd_plugin_api::Matrix;

    /// Three classes marked by a few genes over noise, and one gene never expressed.
    fn blobs(n: usize, g: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let labels: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
        let mut x = vec![0f32; n * g];
        for i in 0..n {
            for j in 0..g - 1 {
                let signal = if j % 3 == labels[i] as usize && j < 12 { 2.0 } else { 0.0 };
                x[i * g + j] = (signal + rng.gen_range(-0.6f32..0.6)).max(0.0);
            }
        }
        (x, labels)
    }

    fn run(config: &str, n: usize) -> f64 {
        let g = 40;
        let (x, y) = blobs(n, g, 1);
        let (xt, yt) = blobs(90, g, 2);
        let names = ["a", "b", "c"];
        let mut m = CellTypist::create(config, 0).unwrap();
        let fit = FitData { x: Matrix { data: &x, n_cells: n, n_genes: g }, counts: None, labels: &y, class_names: names.to_vec(), gene_names: vec![] };
        m.fit(&fit).unwrap();
        assert!(!m.genes.contains(&(g - 1)) && m.genes.len() < g, "the unexpressed gene is dropped");
        let (mut l, mut p) = (vec![0u32; 90], vec![0f32; 90 * 3]);
        m.predict(&PredictData { x: Matrix { data: &xt, n_cells: 90, n_genes: g }, counts: None }, &mut l, &mut p).unwrap();
        for row in p.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        l.iter().zip(&yt).filter(|(a, b)| a == b).count() as f64 / 90.0
    }

    #[test]
    fn every_mode_learns_separable_classes() {
        assert!(run("{}", 120) > 0.95);
        assert!(run(r#"{"use_sgd": true}"#, 120) > 0.95);
        assert!(run(r#"{"use_sgd": true, "mini_batch": true, "batch_size": 16, "batch_number": 4, "balance_cell_type": true}"#, 120) > 0.9);
        assert!(run(r#"{"feature_selection": true, "top_genes": 5}"#, 120) > 0.95);
    }

    #[test]
    fn bad_configs_name_the_field() {
        assert!(Config::parse(r#"{"c": 0}"#).unwrap_err().contains("config c = 0"));
        assert!(Config::parse(r#"{"epochz": 3}"#).unwrap_err().contains("unknown field `epochz`"));
        assert!(Config::parse("{oops").unwrap_err().starts_with("config:"));
        assert!(Config::parse(r#"{"top_genes": 0}"#).unwrap_err().contains("top_genes"));
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }
}
