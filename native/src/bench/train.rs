//! `scdd bench train`: training throughput of the foundation autoencoder and the SCDG denoiser
//! at their default sizes on pbmc3k-sized data, on the CPU and (when present) on CUDA: steps/s,
//! cells/s, time per epoch and peak resident memory (VmHWM, reset between phases).
use crate::foundation::{train_foundation, FoundationConfig, TrainData};
use crate::generator::{train_generator, GenData, GeneratorConfig};
use crate::io::h5ad::ReadOptions;
use crate::params::Check;
use crate::train::{holdout_split, TrainControl};
use crate::error::{bail, Context, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;
use tch::Device;

#[derive(Debug, Clone)]
pub struct TrainParams {
    /// Training data (the 70 % training part of it is used, as after `scdd split`).
    pub data: PathBuf,
    pub label: String,
    /// cpu, cuda, cuda:N, or all (the CPU and, when present, CUDA device 0).
    pub device: String,
    /// Foundation epochs to time.
    pub foundation_epochs: usize,
    /// Generator steps to time.
    pub generator_steps: u64,
    /// Foundation hidden sizes (default: train-foundation's).
    pub hidden: Vec<usize>,
    pub batch_size: usize,
    /// CPU threads for libtorch (default: libtorch's choice).
    pub threads: Option<i32>,
    /// Also write the results as JSON here.
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub model: String,
    pub device: String,
    pub cells: usize,
    pub genes: usize,
    pub params: usize,
    pub batch: usize,
    pub steps: u64,
    pub seconds: f64,
    pub steps_per_s: f64,
    pub cells_per_s: f64,
    /// Seconds per pass over the training cells.
    pub epoch_s: f64,
    pub peak_rss_mib: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct BenchTrain {
    pub data: String,
    pub threads: i32,
    pub rows: Vec<Row>,
}

fn devices(spec: &str) -> Result<Vec<Device>> {
    if spec == "all" {
        let mut v = vec![Device::Cpu];
        if crate::nn::device::cuda_devices() > 0 {
            v.push(Device::Cuda(0));
        }
        return Ok(v);
    }
    let d: crate::nn::device::DeviceArg = spec.parse().map_err(|e: String| crate::error::err!("--device: {e}"))?;
    Ok(vec![d.resolve()?])
}

fn mib(b: Option<u64>) -> Option<f64> {
    b.map(|b| b as f64 / (1024.0 * 1024.0))
}

pub fn run(a: TrainParams) -> Result<()> {
    if let Some(n) = a.threads {
        tch::set_num_threads(n);
    }
    let devs = devices(&a.device)?;
    if a.foundation_epochs == 0 || a.generator_steps == 0 {
        bail!("--foundation-epochs and --generator-steps must be at least 1");
    }
    let full = crate::foundation::data::load_training_data(&a.data, &ReadOptions::default(), Some(&a.label), 3)?;
    let (_, ids, classes) = full.labels.clone().context("labels")?;
    // the 70 % training part, as `scdd split` would give
    let (train_rows, _) = holdout_split(full.x.n_rows(), Some(&ids), 0.3, 0);
    let x = full.x.select_rows(&train_rows);
    let sub_ids: Vec<Option<u32>> = train_rows.iter().map(|&r| ids[r]).collect();
    let n = x.n_rows();
    let g = x.n_cols();
    let data = TrainData { name: full.name.clone(), x: x.clone(), genes: full.genes.clone(), labels: None };
    let mut rows = Vec::new();
    for &dev in &devs {
        let dname = crate::nn::device::describe(dev);
        // Foundation: defaults, no hold-out (pure training), fixed number of epochs.
        let fcfg = FoundationConfig {
            hidden: a.hidden.clone(),
            batch_size: a.batch_size,
            max_epochs: a.foundation_epochs,
            patience: 0,
            val_fraction: 0.0,
            ..FoundationConfig::default()
        };
        crate::train::reset_peak_rss();
        let t0 = Instant::now();
        let run = train_foundation(&data, &fcfg.clone().check()?, &TrainControl::quiet(dev))?;
        let _ = t0;
        let secs = run.train_seconds;
        let steps = run.report.steps;
        let spe = steps as f64 / a.foundation_epochs as f64;
        rows.push(Row {
            model: "foundation".into(),
            device: dname.clone(),
            cells: n,
            genes: g,
            params: run.report.n_params,
            batch: fcfg.batch_size,
            steps,
            seconds: secs,
            steps_per_s: steps as f64 / secs,
            cells_per_s: (n * a.foundation_epochs) as f64 / secs,
            epoch_s: secs / a.foundation_epochs as f64,
            peak_rss_mib: mib(crate::train::peak_rss_bytes()),
        });
        let _ = spe;
        // Generator: defaults, on the latents of the bundle just trained.
        let gcfg = GeneratorConfig { steps: a.generator_steps, holdout: 0.0, ..GeneratorConfig::default() };
        let gdata = GenData { name: data.name.clone(), x: x.clone(), label_column: a.label.clone(), labels: sub_ids.clone(), classes: classes.clone() };
        crate::train::reset_peak_rss();
        let grun = train_generator(&run.bundle, &gdata, &gcfg.clone().check()?, &TrainControl::quiet(dev), true)?;
        let gsecs = grun.train_seconds;
        let batch = gcfg.batch_size.min(n);
        rows.push(Row {
            model: "generator".into(),
            device: dname,
            cells: n,
            genes: g,
            params: grun.denoiser_params,
            batch,
            steps: gcfg.steps,
            seconds: gsecs,
            steps_per_s: gcfg.steps as f64 / gsecs,
            cells_per_s: (gcfg.steps as usize * batch) as f64 / gsecs,
            epoch_s: gsecs / (gcfg.steps as f64 * batch as f64 / n as f64),
            peak_rss_mib: mib(crate::train::peak_rss_bytes()),
        });
    }
    let out = BenchTrain { data: a.data.display().to_string(), threads: tch::get_num_threads(), rows };
    println!("{}", table(&out));
    let json = serde_json::to_string_pretty(&out)?;
    match &a.json {
        Some(p) => {
            crate::io::fs::write_atomic(p, format!("{json}\n").as_bytes())?;
            println!("wrote {}", p.display());
        }
        None => println!("{json}"),
    }
    Ok(())
}

pub fn table(b: &BenchTrain) -> String {
    let mut s = format!(
        "{:<11} {:<18} {:>6} {:>6} {:>10} {:>6} {:>6} {:>8} {:>8} {:>9} {:>9} {:>10}\n",
        "model", "device", "cells", "genes", "params", "batch", "steps", "secs", "steps/s", "cells/s", "s/epoch", "peak MiB"
    );
    for r in &b.rows {
        s += &format!(
            "{:<11} {:<18} {:>6} {:>6} {:>10} {:>6} {:>6} {:>8.2} {:>8.2} {:>9.0} {:>9.2} {:>10}\n",
            r.model,
            r.device,
            r.cells,
            r.genes,
            r.params,
            r.batch,
            r.steps,
            r.seconds,
            r.steps_per_s,
            r.cells_per_s,
            r.epoch_s,
            r.peak_rss_mib.map(|m| format!("{m:.0}")).unwrap_or_else(|| "n/a".into())
        );
    }
    s += &format!("data: {}; peak MiB = VmHWM of this process during the phase (host memory)", b.data);
    s
}
