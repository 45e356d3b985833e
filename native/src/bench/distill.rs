//! `scdd bench distill`: distillation speed and memory at SPC 1 and 10, and how they change
//! when the real dataset grows (rows replicated k×). Each run is a separate `scdd distill`
//! process so its peak memory (VmHWM) is its own.
use crate::distill::RunLog;
use crate::io::h5ad::{self, H5adReader, ReadOptions};
use crate::foundation::FoundationConfig;
use crate::io::fs;
use crate::nn::TchModel;
use crate::error::{bail, Context, Result};
use scdd_core::graph::DenoiserSpec;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct DistillBenchParams {
    /// Training cells.
    pub data: PathBuf,
    pub label: String,
    /// Generator bundle; default: a randomly initialised one of the default sizes (speed and
    /// memory do not depend on the weights' values).
    pub generator: Option<PathBuf>,
    pub steps: usize,
    pub spc: Vec<usize>,
    /// The grown dataset has this many copies of every cell.
    pub growth: usize,
    pub method: crate::distill::Method,
    pub device: String,
    /// Scratch directory (generated files are reused).
    pub dir: PathBuf,
    /// Also write the table as JSON here.
    pub json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Row {
    dataset: String,
    cells: usize,
    spc: usize,
    method: String,
    device: String,
    steps: usize,
    steps_per_s: f64,
    feature_pass_s: f64,
    wall_s: f64,
    peak_rss_mb: f64,
}

pub fn run(a: DistillBenchParams) -> Result<()> {
    std::fs::create_dir_all(&a.dir)?;
    let generator = match &a.generator {
        Some(g) => g.clone(),
        None => random_generator(&a.data, &a.label, &a.dir)?,
    };
    let grown = a.dir.join(format!("grown-x{}.h5ad", a.growth));
    if !grown.exists() {
        eprintln!("writing {} ({}× the cells of {})", grown.display(), a.growth, a.data.display());
        replicate(&a.data, a.growth, &grown)?;
    }
    let n0 = H5adReader::open(&a.data, &ReadOptions::default())?.n_rows();
    let mut plan: Vec<(PathBuf, usize, usize)> = a.spc.iter().map(|&s| (a.data.clone(), n0, s)).collect();
    let big_spc = *a.spc.iter().max().unwrap_or(&1);
    plan.push((grown.clone(), n0 * a.growth, big_spc));
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for (k, (data, cells, spc)) in plan.iter().enumerate() {
        let out = a.dir.join(format!("run{k}.scdd"));
        let t = Instant::now();
        let st = Command::new(&exe)
            .args(["distill", &data.to_string_lossy(), "--generator", &generator.to_string_lossy()])
            .args(["--label", &a.label, "--spc", &spc.to_string(), "--method", a.method.name()])
            .args(["--steps", &a.steps.to_string(), "--device", &a.device, "--checkpoint-every", "0", "--quiet"])
            .args(["--out", &out.to_string_lossy()])
            .status()
            .context("starting scdd distill")?;
        if !st.success() {
            bail!("scdd distill failed on {} (SPC {spc})", data.display());
        }
        let wall = t.elapsed().as_secs_f64();
        let log: RunLog = serde_json::from_slice(&fs::read(&crate::distill::output::log_path(&out))?)?;
        rows.push(Row {
            dataset: data.file_name().unwrap_or_default().to_string_lossy().into_owned(),
            cells: *cells,
            spc: *spc,
            method: a.method.name().to_string(),
            device: log.device.clone(),
            steps: a.steps,
            steps_per_s: log.steps_per_s,
            feature_pass_s: log.feature_pass_s,
            wall_s: wall,
            peak_rss_mb: log.peak_rss_mb,
        });
    }
    println!(
        "{:<44} {:>8} {:>4} {:>8} {:>10} {:>12} {:>8} {:>10}",
        "dataset", "cells", "SPC", "steps", "steps/s", "features s", "wall s", "peak MB"
    );
    for r in &rows {
        println!(
            "{:<44} {:>8} {:>4} {:>8} {:>10.2} {:>12.2} {:>8.1} {:>10.0}",
            r.dataset, r.cells, r.spc, r.steps, r.steps_per_s, r.feature_pass_s, r.wall_s, r.peak_rss_mb
        );
    }
    if let (Some(small), Some(big)) = (rows.iter().find(|r| r.spc == big_spc && r.cells == n0), rows.last()) {
        println!(
            "\n{}× the cells: peak memory ×{:.2}, steps/s ×{:.2}, feature pass ×{:.2} (device {})",
            a.growth,
            big.peak_rss_mb / small.peak_rss_mb,
            big.steps_per_s / small.steps_per_s,
            big.feature_pass_s / small.feature_pass_s.max(1e-9),
            big.device
        );
    }
    if let Some(p) = &a.json {
        fs::write_json(p, &rows)?;
    }
    Ok(())
}

/// A randomly initialised generator with the default foundation and denoiser sizes for the
/// data's genes and classes.
fn random_generator(data: &Path, label: &str, dir: &Path) -> Result<PathBuf> {
    let r = H5adReader::open(data, &ReadOptions::default())?;
    let genes = r.read_genes()?;
    let classes = r.read_obs()?.labels(label)?.classes;
    let path = dir.join(format!("random-generator-{}g-{}c.scddg", genes.len(), classes.len()));
    if path.exists() {
        return Ok(path);
    }
    let mut spec = FoundationConfig::default().graph(genes.len());
    spec.denoiser = Some(DenoiserSpec::reference(spec.latent_dim, classes.len()));
    let m = TchModel::init(spec, 0, tch::Device::Cpu)?;
    let b = m.to_bundle(genes, label.to_string(), classes, Default::default())?;
    fs::write_atomic(&path, &b.to_bytes())?;
    Ok(path)
}

/// Writes `copies` copies of every cell of `src` to `dst` (cell names suffixed `-k`).
fn replicate(src: &Path, copies: usize, dst: &Path) -> Result<()> {
    let ds = h5ad::read_h5ad(src, &ReadOptions::default())?;
    let n = ds.n_cells();
    let rows: Vec<usize> = (0..copies).flat_map(|_| 0..n).collect();
    let mut big = ds.select_cells(&rows);
    big.obs.index = (0..copies).flat_map(|k| ds.obs.index.iter().map(move |c| format!("{c}-{k}"))).collect();
    h5ad::write_h5ad(dst, &big, &Default::default())
}
