//! Latent-code distillation (paper Algorithm 1) and the baselines that share its command.
//!
//! * `dm`, `dc`, `dm+dc` — scDD: latent codes Z, cells `S = G(Z) = D(U(Z, t, τ(c)))`, matching
//!   on the frozen encoder's features, only Z updated. Gradients use the paper's memory trick:
//!   `∂L/∂S` is computed on a detached copy of S, then one backward through G gives `∂L/∂Z`.
//! * `none` — scDD's initial codes (SPC real cells per class, encoded and noised to t).
//! * `random` — SPC real cells per class; `class-mean` — means of SPC random parts of each class.
//! * `dm-data`, `dc-data` — the same losses on gene values directly (kept non-negative).
//!
//! Z is optimised with Adam ([`crate::nn::optim::AdamW`], no weight decay) whose step size is
//! `lr × RMS(initial values)`, so the same relative default works for latent codes and for gene
//! values. DM and DC are each divided by their value at step 0, so `dm+dc` weighs them equally
//! on any dataset. Every random draw comes from a stream keyed by (seed, purpose, step)
//! ([`crate::nn::rng`]): a resumed run repeats an uninterrupted one exactly, and the draws do
//! not depend on the device.
//!
//! Files: [`params`] (method and settings), [`optimise`] (the matching loop), [`baselines`]
//! (cell-level baselines), [`matching`] (the losses), [`real`] (the real-feature store),
//! [`output`] (`scdd distill` as a library call: files in, code file out).
pub mod baselines;
pub mod kmeans;
pub mod matching;
pub mod optimise;
pub mod output;
pub mod params;
pub mod real;

pub use params::{DistillParams, Init, Method};

use crate::error::{bail, Result};
use crate::nn::TchModel;
use crate::params::Checked;
use crate::train::TrainControl;
use matching::ClassSlice;
use real::CellSource;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One logged optimisation step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepLog {
    pub step: usize,
    pub loss: f64,
    pub dm: f64,
    pub dc: f64,
    /// The gene-space term (0 when off).
    #[serde(default)]
    pub gene: f64,
    /// The KIP term (0 when off).
    #[serde(default)]
    pub kip: f64,
}

/// What a run did: configuration, loss curve, timings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunLog {
    pub config: DistillParams,
    pub device: String,
    pub classes: Vec<String>,
    pub n_real_cells: usize,
    pub history: Vec<StepLog>,
    pub feature_pass_s: f64,
    pub optimise_s: f64,
    pub steps_per_s: f64,
    pub peak_rss_mb: f64,
    pub resumed_from: Option<usize>,
}

/// The synthetic set: latent codes (to be decoded by the generator) or cells.
pub enum Synthetic {
    /// `[n, latent]` codes at `timestep`, with class ids.
    Codes { z: Vec<f32>, dim: usize, labels: Vec<u32> },
    /// `[n, genes]` log-normalised cells with class ids.
    Cells { x: Vec<f32>, genes: usize, labels: Vec<u32> },
}

/// Inputs of a run besides the parameters.
pub struct Job<'a> {
    pub source: &'a CellSource,
    /// Class id (into `classes`) of every row of the training file.
    pub class_of: &'a [Option<u32>],
    pub classes: &'a [String],
    pub latent_dim: usize,
    pub model: Option<&'a TchModel>,
    pub generator_id: String,
    /// ᾱ_t of the generator's noise schedule at the codes' timestep.
    pub alpha_bar: f64,
    /// Where the feature store lives.
    pub work_dir: PathBuf,
    /// Device, checkpoint path (`OUT.ckpt`), `--resume`, `--stop-after`, progress.
    pub ctl: TrainControl,
    /// What the checkpoint remembers of the inputs (a resume on other inputs is refused).
    pub fingerprint: std::collections::BTreeMap<String, String>,
}

/// The synthetic set's layout: per present class, SPC rows, and the real rows they start from.
pub struct Plan {
    /// Classes with at least one training cell.
    pub present: Vec<u32>,
    /// Training rows of each class.
    pub class_rows: Vec<Vec<usize>>,
    /// SPC initial rows per present class (without replacement where the class is large enough).
    pub init_rows: Vec<usize>,
    /// Class id of every synthetic row.
    pub labels: Vec<u32>,
    pub slices: Vec<ClassSlice>,
}

impl Plan {
    /// Draws the initial rows from the stream `(seed, "distill/init")`.
    pub fn new(class_of: &[Option<u32>], n_classes: usize, spc: usize, seed: u64) -> Result<Plan> {
        use rand::seq::SliceRandom;
        use rand::Rng;
        let mut class_rows = vec![Vec::new(); n_classes];
        for (r, c) in class_of.iter().enumerate() {
            if let Some(c) = c {
                class_rows[*c as usize].push(r);
            }
        }
        let present: Vec<u32> = (0..n_classes as u32).filter(|&c| !class_rows[c as usize].is_empty()).collect();
        if present.is_empty() {
            bail!("no training cell belongs to any of the generator's classes");
        }
        let mut rng = crate::nn::rng::stream(seed, "distill/init", 0);
        let (mut init_rows, mut labels, mut slices) = (Vec::new(), Vec::new(), Vec::new());
        for &c in &present {
            let rows = &class_rows[c as usize];
            let pick: Vec<usize> = if rows.len() >= spc {
                rows.choose_multiple(&mut rng, spc).copied().collect()
            } else {
                (0..spc).map(|_| rows[rng.gen_range(0..rows.len())]).collect()
            };
            slices.push(ClassSlice { class: c as i64, start: init_rows.len() as i64, len: spc as i64 });
            init_rows.extend(pick);
            labels.extend(std::iter::repeat_n(c, spc));
        }
        Ok(Plan { present, class_rows, init_rows, labels, slices })
    }

    /// Classes with fewer training cells than `spc` (name, cells): their codes repeat cells.
    pub fn small_classes<'a>(&self, classes: &'a [String], spc: usize) -> Vec<(&'a str, usize)> {
        self.present
            .iter()
            .map(|&c| (classes[c as usize].as_str(), self.class_rows[c as usize].len()))
            .filter(|&(_, n)| n < spc)
            .collect()
    }
}

/// Runs one distillation or baseline.
pub fn distill(cfg: &Checked<DistillParams>, job: &Job) -> Result<(Synthetic, RunLog)> {
    let plan = Plan::new(job.class_of, job.classes.len(), cfg.spc, cfg.seed)?;
    let log = RunLog {
        config: (**cfg).clone(),
        device: job.model.map(|m| crate::nn::device::describe(m.device)).unwrap_or_else(|| "cpu".into()),
        classes: job.classes.to_vec(),
        n_real_cells: job.class_of.iter().flatten().count(),
        history: vec![],
        feature_pass_s: 0.0,
        optimise_s: 0.0,
        steps_per_s: 0.0,
        peak_rss_mb: 0.0,
        resumed_from: None,
    };
    let (syn, log) = match cfg.method {
        Method::Random => {
            let x = job.source.rows(&plan.init_rows)?;
            let genes = x.n_cols();
            (Synthetic::Cells { x: x.to_dense().into_raw_vec_and_offset().0, genes, labels: plan.labels }, log)
        }
        Method::ClassMean => {
            let mut rng = crate::nn::rng::stream(cfg.seed, "distill/class-mean", 0);
            let (x, genes) = baselines::class_means(job.source, &plan.class_rows, &plan.present, cfg.spc, &mut rng)?;
            (Synthetic::Cells { x, genes, labels: plan.labels }, log)
        }
        _ => optimise::run(cfg, job, plan, log)?,
    };
    Ok((syn, finish(log)))
}

fn finish(mut log: RunLog) -> RunLog {
    log.peak_rss_mb = crate::train::peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / (1024.0 * 1024.0));
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_takes_spc_rows_per_present_class_from_the_seeded_stream() {
        // class 1 has no cells, class 2 has two
        let class_of = [Some(0), Some(2), None, Some(0), Some(0), Some(2), Some(0)];
        let p = Plan::new(&class_of, 3, 3, 7).unwrap();
        assert_eq!(p.present, vec![0, 2]);
        assert_eq!(p.labels, vec![0, 0, 0, 2, 2, 2]);
        assert_eq!((p.slices[1].class, p.slices[1].start, p.slices[1].len), (2, 3, 3));
        for (r, l) in p.init_rows.iter().zip(&p.labels) {
            assert_eq!(class_of[*r], Some(*l), "row {r} is not of class {l}");
        }
        let mut first: Vec<usize> = p.init_rows[..3].to_vec();
        first.sort();
        first.dedup();
        assert_eq!(first.len(), 3, "a large enough class is drawn without replacement");
        assert_eq!(p.small_classes(&["a".into(), "b".into(), "c".into()], 3), vec![("c", 2)]);
        assert_eq!(Plan::new(&class_of, 3, 3, 7).unwrap().init_rows, p.init_rows, "same seed, same rows");
        assert!(Plan::new(&[None, None], 2, 1, 0).is_err());
    }

    #[test]
    fn memory_estimate_grows_with_the_synthetic_set() {
        let p = |spc| DistillParams { spc, method: Method::Dm, kip_weight: 0.0, ..DistillParams::default() };
        let a = optimise::estimate_bytes(&p(1), 10, 2000, 128, 1000);
        let b = optimise::estimate_bytes(&p(10), 10, 2000, 128, 1000);
        assert!(b > 9.0 * a && b < 11.0 * a, "{a} {b}");
        // The KIP term's real sample: 256 cells of each class × 2000 genes, twice, in f32.
        let k = optimise::estimate_bytes(&DistillParams { kip_weight: 1.0, ..p(1) }, 10, 2000, 128, 1000);
        assert_eq!(k - a, (10 * 256 * 2000 * 2 * 4) as f64);
        // 100 000 cells per class of 10 classes × 2000 genes: well over 10 GB
        assert!(optimise::estimate_bytes(&p(100_000), 10, 2000, 128, 1000) > 1e10);
    }
}
