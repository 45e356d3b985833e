//! `scdd bench torch`: scdd's two hot loops — SCDG training and DM+DC distillation at SPC 1
//! and 10 — against a compact PyTorch implementation of the same algorithm
//! (`native/py/torch_reference.py`, run with the repo's venv), on the same data, the same
//! sizes and the same number of CPU threads, one run each. Both sides time their optimisation
//! loops only.
use crate::distill::output::{distill_to_file, DistillIo};
use crate::distill::{DistillParams, Method};
use crate::error::{bail, Context, Result};
use crate::foundation::data::load_training_data;
use crate::foundation::FoundationConfig;
use crate::generator::{train_generator, GenData, GeneratorConfig};
use crate::io::fs;
use crate::io::h5ad::ReadOptions;
use crate::nn::TchModel;
use crate::params::Check;
use crate::train::TrainControl;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;

/// The PyTorch side, embedded so the binary carries it.
const SCRIPT: &str = include_str!("../../py/torch_reference.py");

#[derive(Debug, Clone)]
pub struct TorchParams {
    /// Training cells (raw counts or log-normalised).
    pub data: PathBuf,
    pub label: String,
    /// CPU threads on both sides.
    pub threads: i32,
    /// SCDG training steps timed.
    pub train_steps: u64,
    /// Distillation steps timed per SPC.
    pub distill_steps: usize,
    pub spc: Vec<usize>,
    /// Python with torch [default: $SCDD_PYTHON, else <workspace>/.venv/bin/python].
    pub python: Option<PathBuf>,
    /// Scratch directory.
    pub dir: PathBuf,
    /// Also write the table as JSON here.
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub loop_name: String,
    pub scdd_steps_per_s: f64,
    pub torch_steps_per_s: f64,
    /// scdd / PyTorch.
    pub ratio: f64,
}

#[derive(Deserialize)]
struct TorchOut {
    train_steps_per_s: f64,
    distill: Vec<TorchDistill>,
    torch: String,
}

#[derive(Deserialize)]
struct TorchDistill {
    spc: usize,
    steps_per_s: f64,
}

pub fn run(p: TorchParams) -> Result<()> {
    if p.threads < 1 || p.train_steps == 0 || p.distill_steps == 0 || p.spc.is_empty() || p.spc.contains(&0) {
        bail!("--threads, --train-steps, --distill-steps and every --spc must be at least 1");
    }
    let py = p.python.clone().unwrap_or_else(super::default_python);
    if !py.exists() {
        bail!("{}: no Python with torch (run scripts/setup.sh, or give --python)", py.display());
    }
    std::fs::create_dir_all(&p.dir).with_context(|| format!("{}: cannot create directory", p.dir.display()))?;
    tch::set_num_threads(p.threads);
    let device = tch::Device::Cpu;

    // The same data both sides see: log-normalised cells, genes in >= 3 cells, labelled cells.
    let d = load_training_data(&p.data, &ReadOptions::default(), Some(&p.label), 3)?;
    let (col, ids, classes) = d.labels.clone().context("the label column is needed")?;
    let rows: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].is_some()).collect();
    let x = d.x.select_rows(&rows);
    let labels: Vec<u32> = rows.iter().map(|&r| ids[r].unwrap()).collect();
    let (n, g) = (x.n_rows(), x.n_cols());

    // scdd: SCDG training from a random foundation of the default sizes.
    let fcfg = FoundationConfig::default();
    let foundation = TchModel::init(fcfg.graph(g), 0, device)?.to_bundle(d.genes.clone(), String::new(), vec![], Default::default())?;
    let gcfg = GeneratorConfig { steps: p.train_steps, holdout: 0.0, ..GeneratorConfig::default() };
    let gd = GenData {
        name: d.name.clone(),
        x: x.clone(),
        label_column: col.clone(),
        labels: labels.iter().map(|&l| Some(l)).collect(),
        classes: classes.clone(),
    };
    eprintln!("scdd: SCDG training, {} steps ...", p.train_steps);
    let run = train_generator(&foundation, &gd, &gcfg.clone().check()?, &TrainControl::quiet(device), true)?;
    let scdd_train = p.train_steps as f64 / run.loop_seconds;
    let gen_path = p.dir.join("bench-torch-generator.scddg");
    fs::write_atomic(&gen_path, &run.bundle.to_bytes())?;

    // scdd: distillation on the training file itself.
    let mut scdd_distill = Vec::new();
    for &spc in &p.spc {
        eprintln!("scdd: DM+DC distillation, SPC {spc}, {} steps ...", p.distill_steps);
        let params = DistillParams { method: Method::DmDc, spc, steps: p.distill_steps, ..DistillParams::default() }.check()?;
        let io = DistillIo {
            label: Some(p.label.clone()),
            device: crate::nn::device::DeviceArg::Cpu,
            checkpoint_every: 0,
            ..DistillIo::new(p.data.clone(), gen_path.clone(), p.dir.join(format!("bench-torch-spc{spc}.scdd")))
        };
        let log = distill_to_file(&params, &io, &run.bundle)?;
        scdd_distill.push((spc, log.steps_per_s));
    }

    // PyTorch: the same sizes and steps.
    let xf = p.dir.join("bench-torch-x.f32");
    let dense = x.to_dense();
    fs::write_atomic(&xf, &dense.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())?;
    let lf = p.dir.join("bench-torch-labels.u32");
    fs::write_atomic(&lf, &labels.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())?;
    let dp = DistillParams::default();
    let spec = serde_json::json!({
        "x": xf, "labels": lf, "n": n, "genes": g, "classes": classes.len(), "latent": fcfg.latent_dim,
        "hidden": fcfg.hidden, "den_hidden": gcfg.hidden, "emb": gcfg.emb_dim, "T": gcfg.timesteps,
        "beta_min": gcfg.beta_min, "beta_max": gcfg.beta_max, "threads": p.threads,
        "train_steps": p.train_steps, "batch": gcfg.batch_size, "lr": gcfg.lr, "ema": gcfg.ema_decay,
        "distill_steps": p.distill_steps, "spc": p.spc, "timestep": dp.timestep, "real_batch": dp.real_batch,
        "distill_lr": dp.lr, "head_steps": dp.head_steps, "head_reset": dp.head_reset, "head_lr": dp.head_lr,
    });
    let spec_path = p.dir.join("bench-torch-spec.json");
    fs::write_json(&spec_path, &spec)?;
    let script = p.dir.join("torch_reference.py");
    fs::write_atomic(&script, SCRIPT.as_bytes())?;
    let out = p.dir.join("bench-torch-out.json");
    eprintln!("PyTorch: the same loops ...");
    let st = Command::new(&py)
        .arg(&script)
        .arg(&spec_path)
        .arg(&out)
        .env("OMP_NUM_THREADS", p.threads.to_string())
        .status()
        .with_context(|| format!("starting {}", py.display()))?;
    if !st.success() {
        bail!("the PyTorch side failed ({st})");
    }
    let t: TorchOut = serde_json::from_slice(&fs::read(&out)?).context("reading the PyTorch side's results")?;

    let mut rows = vec![Row {
        loop_name: format!("SCDG training (batch {})", gcfg.batch_size),
        scdd_steps_per_s: scdd_train,
        torch_steps_per_s: t.train_steps_per_s,
        ratio: scdd_train / t.train_steps_per_s,
    }];
    for (spc, s) in scdd_distill {
        let tv = t.distill.iter().find(|r| r.spc == spc).map_or(f64::NAN, |r| r.steps_per_s);
        rows.push(Row { loop_name: format!("distill DM+DC, SPC {spc}"), scdd_steps_per_s: s, torch_steps_per_s: tv, ratio: s / tv });
    }
    println!(
        "{} ({n} cells × {g} genes, {} classes), CPU, {} threads; PyTorch {}\n",
        p.data.display(),
        classes.len(),
        p.threads,
        t.torch
    );
    println!("| loop | scdd steps/s | PyTorch steps/s | scdd / PyTorch |");
    println!("|---|---:|---:|---:|");
    for r in &rows {
        println!("| {} | {:.1} | {:.1} | {:.2} |", r.loop_name, r.scdd_steps_per_s, r.torch_steps_per_s, r.ratio);
    }
    if let Some(j) = &p.json {
        fs::write_json(j, &rows)?;
    }
    Ok(())
}
