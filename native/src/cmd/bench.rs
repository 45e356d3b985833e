//! `scdd bench`: benchmarks that print a table (`io`, `train`, `distill`); see [`crate::bench`].
use crate::bench;
use crate::bench::io::Writer;
use crate::foundation::FoundationConfig;
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: BenchCmd,
}

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Read + QC + normalize_total + log1p of a generated 100k × 20k .h5ad: scdd against
    /// anndata + scanpy (time, peak memory, equal values).
    Io(IoArgs),
    /// Training throughput of the foundation model and SCDG at default sizes on pbmc3k-sized
    /// data, CPU and CUDA (steps/s, time per epoch, peak memory).
    Train(TrainArgs),
    /// Distillation steps/s and peak memory at SPC 1 and 10, and with the dataset grown 10×.
    Distill(DistillArgs),
    /// SCDG training and DM+DC distillation (SPC 1 and 10) side by side with a compact PyTorch
    /// implementation of the same loops: same data, sizes and threads.
    Torch(TorchArgs),
    /// The evaluator plugins: `celltypist` against the real CellTypist 1.7.1 on the same splits
    /// (accuracy, agreement, training time), and one fit of each plugin on 100 and 10 000 cells.
    Evaluate(EvaluateArgs),
    /// Decoding throughput (cells/s): libtorch on the CPU against the core's reference, random
    /// generators of the default sizes; writes the bundles and codes for scripts/browser-bench.sh.
    Decode(DecodeArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct DecodeArgs {
    /// Gene counts of the generators.
    #[arg(long, value_delimiter = ',', default_values_t = [2000usize, 14_000])]
    pub genes: Vec<usize>,
    /// Codes decoded at a time.
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 10_000])]
    pub cells: Vec<usize>,
    /// Classes of the generators.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub classes: u32,
    /// Where the bundles and code files are written.
    #[arg(long, default_value = "target/bench-decode")]
    pub dir: PathBuf,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct EvaluateArgs {
    /// `scdd split` output directories (train.h5ad, test.h5ad, split.json), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub splits: Vec<PathBuf>,
    /// Python with celltypist 1.7.1 [default: <workspace>/.venv-celltypist/bin/python, made by
    /// scripts/celltypist-venv.sh].
    #[arg(long)]
    pub celltypist_python: Option<PathBuf>,
    /// Plugins whose fit time is measured.
    #[arg(long, value_delimiter = ',', default_values_t = ["celltypist".to_string(), "cnn".to_string(), "transformer".to_string()])]
    pub plugins: Vec<String>,
    /// Training-set sizes for the fit times.
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 10_000])]
    pub sizes: Vec<usize>,
    /// Timed runs of each side on each split; the table gives the fastest (single fits of a few
    /// hundred cells move by ±40 % from run to run).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Scratch space (the matrices handed to CellTypist).
    #[arg(long, default_value = "target/bench-evaluate")]
    pub dir: PathBuf,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    match args.cmd {
        BenchCmd::Io(a) => bench::io::run(a.params())?,
        BenchCmd::Train(a) => bench::train::run(a.params())?,
        BenchCmd::Distill(a) => bench::distill::run(a.params())?,
        BenchCmd::Decode(a) => {
            if let Some(&g) = a.genes.iter().find(|&&g| !(1..=100_000).contains(&g)) {
                anyhow::bail!("--genes {g}: must be between 1 and 100000");
            }
            if let Some(&n) = a.cells.iter().find(|&&n| !(1..=1_000_000).contains(&n)) {
                anyhow::bail!("--cells {n}: must be between 1 and 1000000");
            }
            bench::decode::run(bench::decode::DecodeBenchParams { genes: a.genes, cells: a.cells, classes: a.classes as usize, dir: a.dir, json: a.json })?;
        }
        BenchCmd::Torch(a) => bench::torch::run(a.params())?,
        BenchCmd::Evaluate(a) => bench::evaluate::run(bench::evaluate::EvalBenchParams {
            splits: a.splits,
            celltypist_python: a.celltypist_python,
            plugins: a.plugins,
            sizes: a.sizes,
            runs: a.runs,
            dir: a.dir,
            json: a.json,
        })?,
    }
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct IoArgs {
    /// Where the generated dataset is cached (reused when present).
    #[arg(long, default_value = "target/bench-data")]
    pub dir: PathBuf,
    /// Cells (rows) of the generated dataset.
    #[arg(long, default_value_t = 100_000)]
    pub cells: usize,
    /// Genes (columns) of the generated dataset.
    #[arg(long, default_value_t = 20_000)]
    pub genes: usize,
    /// Fraction of non-zero entries.
    #[arg(long, default_value_t = 0.05)]
    pub density: f64,
    /// Who writes the file: `scdd` (contiguous arrays, what scdd's commands write) or
    /// `anndata` (the scdd-generated data re-written by `anndata.write_h5ad`: chunked arrays,
    /// as most files in the wild; needs the Python).
    #[arg(long, default_value = "scdd")]
    pub writer: Writer,
    /// Seed of the generated dataset.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub qc: super::QcArgs,
    /// `normalize_total` target.
    #[arg(long, default_value_t = 1e4)]
    pub target_sum: f32,
    /// Run each side this many times (alternating) and report each side's fastest run.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Rows whose full contents are compared between the two sides.
    #[arg(long, default_value_t = 200)]
    pub sample_rows: usize,
    /// Python with anndata + scanpy [default: $SCDD_PYTHON, else <workspace>/.venv/bin/python].
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Time scdd only.
    #[arg(long)]
    pub no_python: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Internal: run the scdd side on FILE and write its result to --child-out.
    #[arg(long, hide = true, value_name = "FILE")]
    pub child: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub child_out: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub spawned_at: Option<f64>,
}

impl IoArgs {
    pub fn params(&self) -> bench::io::IoParams {
        bench::io::IoParams {
            dir: self.dir.clone(),
            cells: self.cells,
            genes: self.genes,
            density: self.density,
            writer: self.writer,
            seed: self.seed,
            min_counts: self.qc.min_counts,
            min_cells: self.qc.min_cells,
            target_sum: self.target_sum,
            repeat: self.repeat,
            sample_rows: self.sample_rows,
            python: self.python.clone(),
            no_python: self.no_python,
            json: self.json,
            child: self.child.clone(),
            child_out: self.child_out.clone(),
            spawned_at: self.spawned_at,
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Training data (the 70 % training part of it is used, as after `scdd split`).
    #[arg(long, default_value = "data/pbmc3k_seurat_labels_clustifyr.h5ad")]
    pub data: PathBuf,
    #[arg(long, default_value = "cell_type")]
    pub label: String,
    /// cpu, cuda, cuda:N, or all (the CPU and, when present, CUDA device 0).
    #[arg(long, default_value = "all")]
    pub device: String,
    /// Foundation epochs to time.
    #[arg(long, default_value_t = 2)]
    pub foundation_epochs: usize,
    /// Generator steps to time.
    #[arg(long, default_value_t = 300)]
    pub generator_steps: u64,
    /// Foundation hidden sizes (default: train-foundation's).
    #[arg(long, value_delimiter = ',', default_values_t = FoundationConfig::default().hidden)]
    pub hidden: Vec<usize>,
    #[arg(long, default_value_t = FoundationConfig::default().batch_size)]
    pub batch_size: usize,
    /// CPU threads for libtorch (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl TrainArgs {
    pub fn params(&self) -> bench::train::TrainParams {
        bench::train::TrainParams {
            data: self.data.clone(),
            label: self.label.clone(),
            device: self.device.clone(),
            foundation_epochs: self.foundation_epochs,
            generator_steps: self.generator_steps,
            hidden: self.hidden.clone(),
            batch_size: self.batch_size,
            threads: self.threads,
            json: self.json.clone(),
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct DistillArgs {
    /// Training cells.
    #[arg(long, default_value = "data/pbmc3k_seurat_labels_clustifyr.h5ad")]
    pub data: PathBuf,
    #[arg(long, default_value = "cell_type")]
    pub label: String,
    /// Generator bundle; default: a randomly initialised one of the default sizes (speed and
    /// memory do not depend on the weights' values).
    #[arg(long)]
    pub generator: Option<PathBuf>,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    pub spc: Vec<usize>,
    /// The grown dataset has this many copies of every cell.
    #[arg(long, default_value_t = 10)]
    pub growth: usize,
    #[arg(long, default_value = "dm+dc")]
    pub method: crate::distill::Method,
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Scratch directory (generated files are reused).
    #[arg(long, default_value = "target/bench-distill")]
    pub dir: PathBuf,
    /// Also write the table as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl DistillArgs {
    pub fn params(&self) -> bench::distill::DistillBenchParams {
        bench::distill::DistillBenchParams {
            data: self.data.clone(),
            label: self.label.clone(),
            generator: self.generator.clone(),
            steps: self.steps,
            spc: self.spc.clone(),
            growth: self.growth,
            method: self.method,
            device: self.device.clone(),
            dir: self.dir.clone(),
            json: self.json.clone(),
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct TorchArgs {
    /// Training cells (raw counts or log-normalised).
    #[arg(long, default_value = "data/pbmc3k_seurat_labels_clustifyr.h5ad")]
    pub data: PathBuf,
    #[arg(long, default_value = "cell_type")]
    pub label: String,
    /// CPU threads on both sides.
    #[arg(long, default_value_t = 2)]
    pub threads: i32,
    /// SCDG training steps timed.
    #[arg(long, default_value_t = 300)]
    pub train_steps: u64,
    /// Distillation steps timed per SPC.
    #[arg(long, default_value_t = 50)]
    pub distill_steps: usize,
    #[arg(long, value_delimiter = ',', default_value = "1,10")]
    pub spc: Vec<usize>,
    /// Python with torch [default: $SCDD_PYTHON, else .venv/bin/python].
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Scratch directory.
    #[arg(long, default_value = "target/bench-torch")]
    pub dir: PathBuf,
    /// Also write the table as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl TorchArgs {
    pub fn params(&self) -> bench::torch::TorchParams {
        bench::torch::TorchParams {
            data: self.data.clone(),
            label: self.label.clone(),
            threads: self.threads,
            train_steps: self.train_steps,
            distill_steps: self.distill_steps,
            spc: self.spc.clone(),
            python: self.python.clone(),
            dir: self.dir.clone(),
            json: self.json.clone(),
        }
    }
}
