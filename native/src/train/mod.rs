//! The training-loop kit shared by the foundation, generator and distillation loops: run
//! control ([`TrainControl`]: device, checkpoints, `--resume`, `--stop-after`), the checkpoint
//! container ([`checkpoint`]), seeded mini-batch order ([`Batcher`]), hold-out splits,
//! progress display ([`Progress`]) and peak-memory readings.
//!
//! The convention every loop follows: a checkpoint every `checkpoint_every` steps and at
//! `stop_after`; stopping at `stop_after` returns [`crate::Error::Interrupted`] (the CLI's exit
//! status 3); a non-finite loss returns [`crate::Error::NonFinite`] naming the flag to change.
pub mod checkpoint;

use crate::error::{bail, Result};
use crate::nn::device::DeviceArg;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;
use tch::Device;

/// How a training run is driven (as opposed to what it trains: the config).
#[derive(Clone, Debug)]
pub struct TrainControl {
    pub device: Device,
    /// Checkpoint file (written every `checkpoint_every` steps, read by `resume`).
    pub checkpoint: Option<PathBuf>,
    /// 0 = never.
    pub checkpoint_every: u64,
    /// Continue from `checkpoint` (an error if it does not exist).
    pub resume: bool,
    /// Stop once this many steps are done, after writing a checkpoint: an interruption on
    /// purpose (tests, time-sliced jobs). The run then returns [`crate::Error::Interrupted`].
    pub stop_after: Option<u64>,
    /// Draw a progress bar (only on a terminal) and log per-epoch lines.
    pub progress: bool,
}

impl TrainControl {
    /// CPU, no checkpoints, no output: for tests and benchmarks.
    pub fn quiet(device: Device) -> Self {
        TrainControl { device, checkpoint: None, checkpoint_every: 0, resume: false, stop_after: None, progress: false }
    }
}

impl TrainControl {
    /// The control for a run writing `out`: checkpoints at `OUT.ckpt`. Checks the settings
    /// (threads >= 1, the device exists, `--resume` has a checkpoint to resume from) before any
    /// work.
    pub fn for_output(
        out: &std::path::Path,
        device: DeviceArg,
        checkpoint_every: u64,
        resume: bool,
        stop_after: Option<u64>,
        progress: bool,
        threads: Option<i32>,
    ) -> Result<TrainControl> {
        if let Some(n) = threads {
            if n < 1 {
                return Err(crate::Error::param("--threads", n, "must be at least 1"));
            }
            tch::set_num_threads(n);
        }
        if stop_after == Some(0) {
            return Err(crate::Error::param("--stop-after", 0, "must be at least 1"));
        }
        let device = device.resolve()?;
        let checkpoint = checkpoint::default_path(out);
        if resume && !checkpoint.exists() {
            return Err(crate::Error::Incompatible {
                path: checkpoint,
                reason: "--resume: no checkpoint here (was the run started with the same --out?)".into(),
            });
        }
        Ok(TrainControl { device, checkpoint: Some(checkpoint), checkpoint_every, resume, stop_after, progress })
    }

    /// The error a loop returns when `stop_after` stops it at `step` (checkpoint written).
    pub fn interrupted(&self, step: u64) -> crate::Error {
        crate::Error::Interrupted { step, checkpoint: self.checkpoint.clone().unwrap_or_default() }
    }

    /// True when the loop should stop (checkpoint, then [`TrainControl::interrupted`]) after
    /// `step` of `total`.
    pub fn stops_at(&self, step: u64, total: u64) -> bool {
        self.stop_after.is_some_and(|s| step >= s) && step < total
    }
}

/// Seeded mini-batch order: epoch `e` visits the cells in the permutation drawn from stream
/// `(seed, "batches", e)`, in batches of `batch` (a final batch of a single cell is skipped,
/// BatchNorm cannot normalise one sample). The rows of any step are a pure function of the step.
pub struct Batcher {
    n: usize,
    batch: usize,
    seed: u64,
    cache: Option<(u64, Vec<usize>)>,
}

impl Batcher {
    pub fn new(n: usize, batch: usize, seed: u64) -> Result<Self> {
        if n < 2 {
            bail!("the training set has {n} cell(s); at least 2 are needed");
        }
        if batch < 2 {
            bail!("--batch-size {batch}: must be at least 2");
        }
        Ok(Batcher { n, batch: batch.min(n), seed, cache: None })
    }

    pub fn steps_per_epoch(&self) -> u64 {
        let full = self.n / self.batch;
        let rest = self.n % self.batch;
        (full + usize::from(rest >= 2)) as u64
    }

    /// Indices (into `0..n`) of the batch at global step `step`.
    pub fn rows(&mut self, step: u64) -> Vec<usize> {
        let spe = self.steps_per_epoch();
        let (epoch, k) = (step / spe, (step % spe) as usize);
        if self.cache.as_ref().map(|c| c.0) != Some(epoch) {
            let perm = crate::nn::rng::permutation(&mut crate::nn::rng::stream(self.seed, "batches", epoch), self.n);
            self.cache = Some((epoch, perm));
        }
        let perm = &self.cache.as_ref().unwrap().1;
        perm[k * self.batch..((k + 1) * self.batch).min(self.n)].to_vec()
    }
}

/// A progress bar with loss and throughput, drawn only on a terminal; log lines go above it
/// (or to stderr when no bar is drawn).
pub struct Progress {
    pb: ProgressBar,
    enabled: bool,
    started: Instant,
    start_step: u64,
    unit: &'static str,
}

impl Progress {
    pub fn new(label: &str, total: u64, start_step: u64, enabled: bool, unit: &'static str) -> Self {
        let pb = if enabled { ProgressBar::new(total) } else { ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden()) };
        pb.set_style(
            ProgressStyle::with_template(&format!("{label} {{bar:30}} {{pos}}/{{len}} steps {{msg}} [{{elapsed_precise}}<{{eta_precise}}]"))
                .expect("valid template"),
        );
        pb.set_position(start_step);
        Progress { pb, enabled, started: Instant::now(), start_step, unit }
    }

    /// Updates position and message: loss and items (cells) per second since the start.
    pub fn tick(&self, step: u64, items_done: u64, loss: f64) {
        self.pb.set_position(step);
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let _ = self.start_step;
        self.pb.set_message(format!("loss {loss:.5} | {:.0} {}/s", items_done as f64 / secs, self.unit));
    }

    pub fn log(&self, msg: &str) {
        if !self.enabled {
            return;
        }
        if self.pb.is_hidden() {
            eprintln!("{msg}");
        } else {
            self.pb.println(msg);
        }
    }

    pub fn finish(&self) {
        self.pb.finish_and_clear();
    }
}

/// Splits rows `0..n` into (fit, held-out) with about `fraction` held out: stratified by label
/// when `labels` is given (each class with at least two cells gives at least one), else at
/// random. Cells of classes too small to split, and unlabelled cells, stay in the fit part.
pub fn holdout_split(n: usize, labels: Option<&[Option<u32>]>, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    use rand::seq::SliceRandom;
    if fraction <= 0.0 || n < 2 {
        return ((0..n).collect(), Vec::new());
    }
    let mut groups: std::collections::BTreeMap<Option<u32>, Vec<usize>> = Default::default();
    for i in 0..n {
        let key = match labels {
            Some(l) => l[i],
            None => Some(0),
        };
        groups.entry(key).or_default().push(i);
    }
    let mut rng = crate::nn::rng::stream(seed, "holdout", 0);
    let (mut fit, mut held) = (Vec::new(), Vec::new());
    for (key, mut grp) in groups {
        if key.is_none() || grp.len() < 2 {
            fit.extend(grp);
            continue;
        }
        grp.shuffle(&mut rng);
        let m = ((grp.len() as f64 * fraction).round() as usize).clamp(1, grp.len() - 1);
        held.extend_from_slice(&grp[..m]);
        fit.extend_from_slice(&grp[m..]);
    }
    fit.sort_unstable();
    held.sort_unstable();
    (fit, held)
}

/// Peak resident memory of this process (VmHWM from /proc/self/status), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets the peak-RSS counter (Linux ≥ 4.0: `echo 5 > /proc/self/clear_refs`); false if not
/// possible.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A content hash of a sparse matrix (shape, structure and values), for checkpoint
/// fingerprints: a resume on other data is refused.
pub fn fingerprint_csr(x: &scdd_core::matrix::CsrMatrix) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((x.n_rows() as u64).to_le_bytes());
    h.update((x.n_cols() as u64).to_le_bytes());
    for v in x.indptr() {
        h.update(v.to_le_bytes());
    }
    for v in x.indices() {
        h.update(v.to_le_bytes());
    }
    for v in x.data() {
        h.update(v.to_bits().to_le_bytes());
    }
    crate::io::artifacts::hex(&h.finalize()[..8])
}

/// The memory budget work is sized against before it starts, in bytes: `SCDD_MEMORY_BUDGET_MB`
/// when set, else what the system can still give (MemAvailable from /proc/meminfo).
pub fn memory_budget_bytes() -> Option<f64> {
    if let Some(mb) = std::env::var("SCDD_MEMORY_BUDGET_MB").ok().and_then(|v| v.trim().parse::<f64>().ok()) {
        if mb.is_finite() && mb > 0.0 {
            return Some(mb * 1e6);
        }
    }
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batcher_covers_each_epoch_and_is_pure() {
        let mut b = Batcher::new(10, 4, 1).unwrap();
        assert_eq!(b.steps_per_epoch(), 3);
        let mut seen: Vec<usize> = (0..3).flat_map(|s| b.rows(s)).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        let r5 = b.rows(5);
        let mut fresh = Batcher::new(10, 4, 1).unwrap();
        assert_eq!(fresh.rows(5), r5);
        // a lone last cell is skipped
        let b = Batcher::new(9, 4, 1).unwrap();
        assert_eq!(b.steps_per_epoch(), 2);
        assert!(Batcher::new(1, 4, 1).is_err());
    }

    #[test]
    fn holdout_is_stratified() {
        let labels: Vec<Option<u32>> = (0..100).map(|i| if i < 80 { Some(0) } else if i < 99 { Some(1) } else { Some(2) }).collect();
        let (fit, held) = holdout_split(100, Some(&labels), 0.1, 3);
        assert_eq!(fit.len() + held.len(), 100);
        assert_eq!(held.iter().filter(|&&i| i < 80).count(), 8);
        assert_eq!(held.iter().filter(|&&i| (80..99).contains(&i)).count(), 2);
        assert!(fit.contains(&99), "a singleton class stays in the fit part");
        let (f2, h2) = holdout_split(100, None, 0.2, 3);
        assert_eq!((f2.len(), h2.len()), (80, 20));
        assert_eq!(holdout_split(100, None, 0.0, 3).1.len(), 0);
    }
}
